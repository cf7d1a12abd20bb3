"""The confidence step's pieces: Bragg fraction of a fingerprint and the vacuum check of a structure."""

from __future__ import annotations

import numpy as np
from ase.build import bulk, fcc111

from crystalface.confidence import TOP_PIXELS, bragg_fraction, domain_problem, vacuum_fraction
from crystalface.fingerprint import DF2D


def _bragg_by_sorting(image: np.ndarray, params: DF2D) -> float:
    """The definition, written the slow way: sum of the brightest 1 % of the masked pixels over their sum."""
    pixels = np.sort(image[:, params.mask()].astype(np.float64).ravel())[::-1]
    k = max(1, int(round(TOP_PIXELS * pixels.size)))
    return float(pixels[:k].sum() / pixels.sum()) if pixels.sum() > 0 else 0.0


def test_bragg_fraction_is_the_share_of_the_brightest_pixels_in_any_precision():
    params = DF2D()
    rng = np.random.default_rng(3)
    images = (rng.random((5, 3, params.n_pixels, params.n_pixels)) ** np.array([1, 4, 16, 64, 256])[:, None, None, None])
    images = images.astype(np.float32)
    images[2] = 0.0  # an empty fingerprint carries no Bragg intensity
    given = images.copy()
    expected = [_bragg_by_sorting(im, params) for im in images]
    assert expected[2] == 0.0 and expected[0] < 0.05 < expected[4]
    for batch in (images, images.astype(np.float64)):
        np.testing.assert_allclose(bragg_fraction(batch, params), expected, rtol=1e-12, atol=0)
    single = bragg_fraction(images[4], params)
    assert single.shape == () and np.isclose(single, expected[4], rtol=1e-12)
    assert np.array_equal(images, given)  # the input is left as it was


def test_vacuum_fraction_tells_bulk_from_a_slab_whatever_the_cell_given():
    cu = bulk("Cu", "fcc", a=3.6)
    assert vacuum_fraction(cu) == 0.0
    skewed = cu.copy()
    skewed.set_cell(np.array([[1, 0, 0], [3, 1, 0], [0, -2, 1]]) @ cu.cell[:], scale_atoms=False)  # same lattice, long vectors
    assert vacuum_fraction(skewed) == 0.0
    slab = fcc111("Cu", (2, 2, 4), vacuum=10.0, periodic=True)
    assert vacuum_fraction(slab) > 0.3
    assert domain_problem(cu) is None and "vacuum" in domain_problem(slab)
