"""Tests of crystalface.cluster: a non-periodic ball of whole coordination shells of about n_atoms atoms."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import neighbor_list

from conftest import LABELS, rotated
from crystalface import StructureError, cluster, standard_cell

TARGETS = [32, 64, 100, 256, 500]


def neighbour_distances(atoms: Atoms, center: int, radius: float) -> np.ndarray:
    """Oracle independent of cluster(): sorted distances from atom ``center`` to every atom of the
    periodic crystal (all images) within ``radius``, from ASE's neighbour list."""
    i, d = neighbor_list("id", atoms, radius)
    return np.sort(d[i == center])


def shell_counts(atoms: Atoms, center: int, radius: float) -> np.ndarray:
    """Number of atoms (centre included) inside each complete coordination shell within ``radius``."""
    d = neighbour_distances(atoms, center, radius)
    ends = np.concatenate([np.flatnonzero(np.diff(d) > 1e-3) + 1, [len(d)]])
    complete = d[ends - 1] < radius - 0.1  # a shell at the cut-off may be cut by rounding
    return ends[complete] + 1


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("target", TARGETS)
def test_size_is_the_shell_boundary_closest_to_the_target(prototypes, label, target):
    atoms = standard_cell(prototypes[label])
    result = cluster(atoms, n_atoms=target, center=0)
    radius = 2.0 * (3 * target * atoms.get_volume() / len(atoms) / (4 * np.pi)) ** (1 / 3)
    counts = shell_counts(atoms, 0, radius)
    assert counts[-1] > 2 * target  # the oracle sees beyond the target
    assert abs(len(result) - target) == np.abs(counts - target).min(), (len(result), counts)
    assert len(result) in counts  # a shell boundary
    if target >= 256:  # shells are fine-grained at these sizes: the count is near the target
        assert abs(len(result) - target) <= 0.1 * target


@pytest.mark.parametrize("label", LABELS)
def test_whole_shells_only(prototypes, label):
    """No shell is split: every atom of the crystal within the cluster's radius is in the cluster."""
    atoms = standard_cell(prototypes[label])
    result = cluster(atoms, n_atoms=256, center=0)
    r_max = np.linalg.norm(result.positions, axis=1).max()
    d = neighbour_distances(atoms, 0, r_max + 1.0)
    assert len(result) == 1 + np.count_nonzero(d <= r_max + 1e-4)


@pytest.mark.parametrize("label", LABELS)
def test_centred_on_an_atom_at_the_origin(prototypes, label):
    result = cluster(standard_cell(prototypes[label]), n_atoms=128)
    assert np.linalg.norm(result.positions, axis=1).min() < 1e-9
    assert np.sort(np.linalg.norm(result.positions, axis=1))[1] > 0.5


@pytest.mark.parametrize("label", ["fcc", "bcc", "sc", "bct139"])
def test_centroid_at_the_origin_for_inversion_symmetric_sites(prototypes, label):
    result = cluster(standard_cell(prototypes[label]), n_atoms=256)
    assert np.abs(result.positions.mean(axis=0)).max() < 1e-9


def test_non_periodic_with_the_elements_of_the_crystal(prototypes):
    result = cluster(prototypes["bct141"].repeat(2), n_atoms=64)
    assert not result.pbc.any()
    assert result.cell.rank == 0
    assert set(result.get_chemical_symbols()) == {"Sn"}


@pytest.mark.parametrize("n_atoms", [31, 0, -10])
def test_too_small_target_is_rejected(prototypes, n_atoms):
    with pytest.raises(ValueError, match="at least 32"):
        cluster(prototypes["fcc"], n_atoms=n_atoms)


def test_non_periodic_input_is_rejected():
    with pytest.raises(StructureError, match="lattice vectors"):
        cluster(Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]]), n_atoms=64)


def test_bad_centre_is_rejected(prototypes):
    with pytest.raises(ValueError, match="center"):
        cluster(prototypes["fcc"], n_atoms=64, center=5)


def _as_set(atoms: Atoms) -> np.ndarray:
    keys = np.column_stack([atoms.numbers, np.round(atoms.positions, 5)])
    return keys[np.lexsort(keys.T[::-1])]


@pytest.mark.parametrize("label", LABELS)
def test_same_atoms_for_primitive_and_supercell_input(prototypes, label):
    primitive = rotated(prototypes[label], 8)
    supercell = primitive.repeat((2, 3, 4))  # atom 0 of the supercell is atom 0 of the primitive cell
    a = cluster(primitive, n_atoms=256, center=0)
    b = cluster(supercell, n_atoms=256, center=0)
    assert len(a) == len(b)
    assert np.allclose(_as_set(a), _as_set(b), atol=2e-5)


def test_default_centre_does_not_depend_on_the_atom_order(prototypes):
    atoms = prototypes["diam"]
    swapped = atoms[[1, 0]]
    assert np.allclose(_as_set(cluster(atoms, 128)), _as_set(cluster(swapped, 128)), atol=2e-5)


def test_default_centre_does_not_depend_on_the_atom_order_without_ties(prototypes):
    atoms = prototypes["bct139"].repeat((3, 2, 2))
    shuffled = atoms[np.random.default_rng(0).permutation(len(atoms))]
    assert np.allclose(_as_set(cluster(atoms, 128)), _as_set(cluster(shuffled, 128)), atol=2e-5)


def test_cluster_keeps_where_the_structure_came_from(prototypes):
    atoms = prototypes["fcc"]
    atoms.info.update(source="fcc.in", index=0)
    result = cluster(standard_cell(atoms), n_atoms=64)
    assert result.info.get("source") == "fcc.in" and result.info.get("index") == 0
