"""Tests of crystalface.local: the translation lattice of a finite cluster, and lattice-free classification."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from crystalface import load_model
from crystalface.examples import REAL_CRYSTALS, random_rotation
from crystalface.local import classify_cluster, classify_clusters, local_lattice, oriented_cluster


@pytest.fixture(scope="module")
def model():
    return load_model()


def _is_sublattice(found: np.ndarray, lattice: np.ndarray) -> bool:
    """Every found vector is an integer combination of ``lattice`` (within 0.05)."""
    coords = found @ np.linalg.inv(lattice)
    return bool(np.abs(coords - np.round(coords)).max() < 0.05)


@pytest.mark.parametrize("crystal", [
    bulk("Cu", "fcc", a=3.6), bulk("Fe", "bcc", a=2.87), bulk("Mg", "hcp", a=3.21, c=5.21), bulk("Si", "diamond", a=5.43),
], ids=["fcc", "bcc", "hcp", "diamond"])
@pytest.mark.parametrize("seed", [0, 1])
def test_local_lattice_of_rotated_cluster(model, crystal, seed):
    """The lattice found from a randomly rotated finite cluster is the crystal's primitive lattice, rotated."""
    from scipy.spatial.transform import Rotation

    from crystalface import standard_cell

    ball = model.descriptor.cluster(crystal)  # in the standard orientation of standard_cell
    rotation = Rotation.random(random_state=seed).as_matrix()
    found = local_lattice(ball.positions @ rotation.T)
    assert found is not None
    lattice = np.asarray(standard_cell(crystal).cell[:]) @ rotation.T
    # the same lattice: each basis is an integer combination of the other
    assert _is_sublattice(found, lattice) and _is_sublattice(lattice, found)


def test_local_lattice_tolerates_noise_and_vacancies(model):
    from crystalface import displace, vacancies

    crystal = bulk("Cu", "fcc", a=3.6)
    ball = random_rotation(displace(vacancies(model.descriptor.cluster(crystal), 0.25, seed=0), 0.05, seed=0), seed=4)
    found = local_lattice(ball.positions)
    assert found is not None
    assert abs(abs(np.linalg.det(found)) - 3.6**3 / 4) < 0.05 * 3.6**3 / 4


def test_no_lattice_in_a_random_gas():
    rng = np.random.default_rng(0)
    gas = rng.uniform(0, 15, size=(250, 3))
    assert local_lattice(gas) is None


def test_local_lattice_validates_input():
    with pytest.raises(ValueError, match="positions must be an"):
        local_lattice(np.zeros((10, 2)))
    assert local_lattice(np.zeros((3, 3))) is None  # too few atoms


def test_classify_rotated_clusters_of_every_class(model):
    """Pristine clusters of the real crystals, randomly rotated and without lattice vectors."""
    clusters = [random_rotation(model.descriptor.cluster(c.primitive()), seed=i) for i, c in enumerate(REAL_CRYSTALS)]
    predictions = classify_clusters(clusters, model)
    assert [p.label for p in predictions] == [c.label for c in REAL_CRYSTALS]
    assert all(p.confident for p in predictions)


def test_classify_cluster_without_lattice_is_not_confident(model):
    from ase import Atoms

    gas = Atoms("Fe250", positions=np.random.default_rng(1).uniform(0, 15, size=(250, 3)))
    p = classify_cluster(gas, model)
    assert p.label is None and p.confident is False and "lattice" in p.error


def test_oriented_cluster_is_in_the_training_orientation(model):
    """A rotated cluster comes back in the standard orientation: same fingerprint as the periodic pipeline."""
    from crystalface import fingerprint, scale

    crystal = bulk("Fe", "bcc", a=2.87)
    ball = model.descriptor.cluster(crystal)
    oriented = oriented_cluster(random_rotation(ball, seed=7), n_atoms=len(ball))
    a = fingerprint(scale(ball))
    b = fingerprint(scale(oriented))
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99
