"""Tests of crystalface.fingerprint: the DF-2D image, production kernel against the definition."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from conftest import LABELS
from crystalface import DF2D, cluster, fingerprint, fingerprint_reference, scale, standard_cell


@pytest.fixture(scope="module")
def clusters(_prototype_cache) -> dict[str, Atoms]:
    """Scaled 256-atom clusters of every prototype (standard_cell -> cluster(256) -> scale)."""
    return {label: scale(cluster(standard_cell(atoms), n_atoms=256)) for label, atoms in _prototype_cache.items()}


@pytest.fixture(scope="module")
def production(clusters) -> dict[str, np.ndarray]:
    images = fingerprint(list(clusters.values()))
    return dict(zip(clusters, images))


@pytest.fixture(scope="module")
def reference(clusters) -> dict[str, np.ndarray]:
    return {label: fingerprint_reference(atoms) for label, atoms in clusters.items()}


def random_cluster(n: int = 60, seed: int = 0) -> Atoms:
    """A cluster with no symmetry at all: every symmetry test on it is discriminating."""
    rng = np.random.default_rng(seed)
    return Atoms(numbers=rng.choice([6, 14, 29], n), positions=rng.uniform(-3, 3, (n, 3)))


@pytest.mark.parametrize("label", LABELS)
def test_production_kernel_agrees_with_the_reference(production, reference, label):
    """Acceptance criterion: max |difference| <= 0.02 and Pearson correlation >= 0.999."""
    fast, exact = production[label], reference[label]
    assert np.abs(fast - exact).max() <= 0.02
    assert np.corrcoef(fast.ravel(), exact.ravel())[0, 1] >= 0.999


@pytest.mark.parametrize("label", LABELS)
def test_shape_range_and_mask(production, reference, label):
    mask = DF2D().mask()
    assert 0 < mask.sum() < mask.size
    for image in (production[label], reference[label]):
        assert image.shape == (3, 64, 64) and image.dtype == np.float32
        assert image.min() == 0.0 and image.max() == 1.0
        assert np.all(image[:, ~mask] == 0.0)  # exactly zero, every channel
        assert np.all(image[:, mask].max(axis=1) > 0)  # every channel has signal


def test_single_structure_gives_one_image_and_a_list_gives_a_batch(clusters):
    atoms = clusters["fcc"]
    assert fingerprint(atoms).shape == (3, 64, 64)
    assert fingerprint([atoms]).shape == (1, 3, 64, 64)
    assert fingerprint([]).shape == (0, 3, 64, 64)


def test_a_fingerprint_does_not_depend_on_the_other_structures_of_the_list(clusters, production):
    # bit for bit: a batch job cuts its chunks anywhere (resume, Dask parts), and padding a batch to
    # its largest cluster changed the rounding of the sums (up to 4e-7 in a pixel, 55 of 64 supercells)
    structures = list(clusters.values()) + [random_cluster(), clusters["fcc"][:100]]  # different sizes
    together = fingerprint(structures)
    one_by_one = np.stack([fingerprint(atoms) for atoms in structures])
    assert np.array_equal(together, one_by_one)
    assert np.array_equal(fingerprint(structures[::-1]), one_by_one[::-1])
    assert np.array_equal(together[: len(production)], np.stack(list(production.values())))


def test_batch_size_is_deprecated_and_ignored(clusters):
    structures = list(clusters.values())
    with pytest.warns(FutureWarning, match="batch_size"):
        assert np.array_equal(fingerprint(structures, batch_size=3), fingerprint(structures))


@pytest.mark.parametrize("kernel", [fingerprint, fingerprint_reference])
@pytest.mark.parametrize("structure", ["bct141", "random"])
def test_translation_and_permutation_invariance(clusters, kernel, structure):
    atoms = random_cluster() if structure == "random" else clusters[structure]
    image = kernel(atoms)
    moved = atoms.copy()
    moved.positions += [1.7, -3.2, 0.5]
    assert np.abs(kernel(moved) - image).max() < 1e-4
    permuted = atoms[np.random.default_rng(1).permutation(len(atoms))]
    assert np.abs(kernel(permuted) - image).max() < 1e-4


@pytest.mark.parametrize("kernel", [fingerprint, fingerprint_reference])
@pytest.mark.parametrize("structure", ["fcc", "hex/rh (hR)", "random"])
def test_rotation_about_z_by_90_degrees_rotates_the_images(clusters, kernel, structure):
    """Rotating the cluster by +90 deg about z (x -> y) turns every channel clockwise in the image.

    The beam is along z, so a rotation about z maps the Ewald sphere and the (square, centred)
    detector grid onto themselves: I'(q) = I(Rz(-90) q). Row index is y and column index x, so
    that is ``np.rot90(image, k=-1)``. The x and y channels swap: Rx(t) Rz(90) = Rz(90) Ry(-t) and
    the +-45 degree pair is symmetric under t -> -t. The joint min-max normalisation is unchanged
    because the set of three channels only rotates.
    """
    atoms = random_cluster() if structure == "random" else clusters[structure]
    rz90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    turned = atoms.copy()
    turned.positions = atoms.positions @ rz90.T
    red, green, blue = kernel(atoms)
    red_t, green_t, blue_t = kernel(turned)
    assert np.abs(blue_t - np.rot90(blue, k=-1)).max() < 1e-4
    assert np.abs(red_t - np.rot90(green, k=-1)).max() < 1e-4
    assert np.abs(green_t - np.rot90(red, k=-1)).max() < 1e-4
    # the convention matters: the other sense does not fit (fcc is 4-fold about z only approximately
    # in its standard cell, the others not at all)
    assert np.abs(blue_t - np.rot90(blue, k=1)).max() > 1e-3


@pytest.mark.parametrize("angle", [45.0, 30.0, 90.0])
def test_production_kernel_follows_the_reference_for_other_rotation_angles(angle):
    """The z pair is one sum turned on the detector when 2 x angle is a multiple of 90 degrees, two sums otherwise."""
    params = DF2D(angle=angle)
    atoms = random_cluster(120, seed=3)
    fast, exact = fingerprint(atoms, params), fingerprint_reference(atoms, params)
    assert np.abs(fast - exact).max() <= 0.02
    assert np.corrcoef(fast.ravel(), exact.ravel())[0, 1] >= 0.9999


def test_scattering_factor_is_the_atomic_number():
    """Two atoms: I(q) = f1^2 + f2^2 + 2 f1 f2 cos(q.d), so the contrast tells the ratio of the f."""
    params = DF2D(angle=0.0)  # no rotation: the plain pattern in every channel
    pair = Atoms("CuC", positions=[[0, 0, 0], [0.0, 0.5, 0.0]])
    q = params.q_exact()
    exact = 29**2 + 6**2 + 2 * 29 * 6 * np.cos(q[..., 1] * 0.5)
    expected = exact * params.mask()
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    assert np.allclose(fingerprint_reference(pair, params)[2], expected, atol=1e-5)
    assert np.allclose(fingerprint(pair, params)[2], expected, atol=1e-3)


@pytest.mark.parametrize(
    "kwargs",
    [dict(n_pixels=4), dict(inner_radius=10.0, outer_radius=5.0), dict(inner_radius=-1.0), dict(wavelength=0.0),
     dict(wavelength=-5e-12), dict(detector_distance=0.0), dict(pixel_size=-4e-4), dict(wavelength=float("nan"))],
)
def test_df2d_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        DF2D(**kwargs)


def test_bad_order_is_rejected(clusters):
    with pytest.raises(ValueError, match="order"):
        fingerprint(clusters["fcc"], order=3)


def test_paper_defaults():
    params = DF2D()
    assert (params.wavelength, params.detector_distance, params.pixel_size, params.n_pixels, params.angle) == (
        5e-12, 0.1, 4e-4, 64, 45.0)
    assert params.k == pytest.approx(2 * np.pi / 0.05)  # 1/Å for lambda = 5 pm
