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


@pytest.mark.parametrize("at_once", [1 << 20, 0])  # all shifts in one array, and shift by shift (large cells)
def test_images_in_ball_keep_every_image_within_the_ball_in_shift_order(monkeypatch, at_once):
    """The images computed for the ball (_images_in_ball) include every one within its radius (all
    shifts checked by brute force), listed shift by shift and atom by atom, as the ball's ties need."""
    import importlib

    from crystalface.cluster import _images_in_ball, _integer_shifts

    # the module, not the function crystalface.cluster that the package exports under its name
    monkeypatch.setattr(importlib.import_module("crystalface.cluster"), "_AT_ONCE", at_once)
    rng = np.random.default_rng(3)
    for trial in range(20):
        cell = np.diag(rng.uniform(3.0, 12.0, 3)) + np.triu(rng.uniform(-3.0, 3.0, (3, 3)), 1)
        rel = rng.random((int(rng.integers(1, 40)), 3)) @ cell - rng.random(3) @ cell
        radius = rng.uniform(2.0, 15.0)
        spacing = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
        reps = np.ceil(radius / spacing).astype(int) + 1
        shifts = _integer_shifts(tuple(int(r) for r in reps)) @ cell
        shift, atom = _images_in_ball(rel @ np.linalg.inv(cell), radius / spacing, reps)
        everything = np.linalg.norm(rel[None, :, :] + shifts[:, None, :], axis=-1)  # (shift, atom)
        within = set(zip(*np.nonzero(everything <= radius)))
        assert within <= set(zip(shift.tolist(), atom.tolist())), trial
        order = shift * len(rel) + atom
        assert np.all(np.diff(order) > 0), trial


def test_a_large_cell_gives_its_ball():
    """442 368 atoms (48^3 conventional cells of fcc Cu, a 173 Å cube): 125 shifts of every atom were
    5.5e7 image positions, and the cell was refused as "too thin"."""
    from ase.build import bulk

    ball = cluster(bulk("Cu", "fcc", a=3.61, cubic=True).repeat(48), n_atoms=256)
    small = cluster(bulk("Cu", "fcc", a=3.61), n_atoms=256)
    assert len(ball) == len(small) == 249
    np.testing.assert_allclose(np.sort(np.linalg.norm(ball.positions, axis=1)),
                               np.sort(np.linalg.norm(small.positions, axis=1)), atol=1e-9)


def _hot_small_cell(seed: int = 0, a: float = 3.0) -> tuple[Atoms, np.ndarray]:
    """Eight atoms of simple cubic polonium (2 x 2 x 2 cells), displaced by ``u`` (atom 0, the ball's
    centre, not), with the site (all 0) and displacement of each atom as standard_cell gives them."""
    from ase.build import bulk

    cell = bulk("Po", "sc", a=a).repeat(2)
    u = np.random.default_rng(seed).normal(0.0, 0.1, (len(cell), 3))
    u[0] = 0.0
    cell.positions += u
    cell.new_array("site", np.zeros(len(cell), dtype=int))
    cell.new_array("displacement", u)
    return cell, u


def _without_sites(atoms: Atoms) -> Atoms:
    plain = atoms.copy()
    del plain.arrays["site"], plain.arrays["displacement"]
    return plain


def _rows(x: np.ndarray) -> np.ndarray:
    return x[np.lexsort(np.round(x, 9).T)]


def test_a_ball_that_repeats_the_cell_deals_its_displacements_out_anew():
    """The ball of an 8-atom cell holds each atom ~12 times: each image keeps its site and gets the
    displacement of a random image on the same site, so the ball holds the same displacements as
    often as before, no longer repeating with the cell's period."""
    a = 3.0
    cell, u = _hot_small_cell(a=a)

    def sites_and_moves(ball: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Lattice site of each atom, its displacement from it, and the displacement the atom of
        the cell it is an image of has (atom 4i + 2j + k of the 2 x 2 x 2 cell sits at (i, j, k) a)."""
        sites = np.round(ball.positions / a)
        i, j, k = np.mod(sites.astype(int), 2).T
        return sites, ball.positions - a * sites, u[4 * i + 2 * j + k]

    sites, moved, in_cell = sites_and_moves(cluster(cell, n_atoms=100, center=0))
    plain_sites, plain_moved, plain_in_cell = sites_and_moves(cluster(_without_sites(cell), n_atoms=100, center=0))
    np.testing.assert_allclose(plain_moved, plain_in_cell, atol=1e-9)  # without sites: periodic, as the cell
    np.testing.assert_array_equal(_rows(sites), _rows(plain_sites))  # the same sites
    np.testing.assert_allclose(_rows(moved), _rows(plain_moved), atol=1e-9)  # the same displacements, as often
    in_step = np.all(np.isclose(moved, in_cell, atol=1e-9), axis=1)
    assert in_step.mean() < 0.4  # 1 in 8 by chance


def test_dealing_displacements_is_seeded():
    cell, _ = _hot_small_cell()
    first = cluster(cell, n_atoms=100, center=0, seed=3).positions
    np.testing.assert_array_equal(first, cluster(cell, n_atoms=100, center=0, seed=3).positions)
    assert not np.allclose(first, cluster(cell, n_atoms=100, center=0, seed=4).positions)


def test_atoms_on_no_site_and_balls_that_hold_every_atom_once_keep_their_displacements():
    cell, u = _hot_small_cell()
    cell.arrays["site"][3] = -1  # an interstitial, say
    ball = cluster(cell, n_atoms=100, center=0)
    plain = cluster(_without_sites(cell), n_atoms=100, center=0)
    third = np.all(np.isclose(np.mod(plain.positions - u[3], 6.0), np.mod(cell.positions[3] - u[3], 6.0)), axis=1)
    assert third.sum() > 5
    kept = {tuple(np.round(p, 9)) for p in ball.positions}
    assert all(tuple(np.round(p, 9)) in kept for p in plain.positions[third])
    big, _ = _hot_small_cell()
    big = big.repeat(6)  # 1728 atoms, a ball of 100 holds each once
    np.testing.assert_array_equal(cluster(big, n_atoms=100).positions, cluster(_without_sites(big), n_atoms=100).positions)


def test_two_atoms_nearest_one_site_keep_their_displacements():
    """Atom 5 of a cold 27-atom cell has left its site for a spot 0.4 Å from the site of atom 4: both
    are nearest that site, and dealt the displacement of one another they would fall onto one spot.
    The ball keeps them as they are."""
    from ase.build import bulk

    atoms = bulk("Po", "sc", a=3.0).repeat(3)
    atoms.positions += np.random.default_rng(1).normal(0.0, 0.05, atoms.positions.shape)
    atoms.positions[5] = atoms.positions[4] + [0.0, 0.4, 0.0]
    cell = standard_cell(atoms)
    assert np.all(cell.arrays["site"] == 0)
    ideal = cell.positions - cell.arrays["displacement"]
    assert np.linalg.norm(ideal[4] - ideal[5]) < 1e-9  # one site
    ball = cluster(cell, n_atoms=100)
    distances = np.linalg.norm(ball.positions[:, None] - ball.positions[None], axis=-1) + 10 * np.eye(len(ball))
    assert np.min(distances) == pytest.approx(0.4, abs=1e-9)


def test_an_order_of_the_crystal_is_not_dealt_out():
    """A7 near simple cubic (x = 0.236): the lattice search takes the cubic pseudo-lattice, on whose
    sites the atoms sit displaced by +-0.15 Å, the order of the crystal. Its ball repeats the cell, as
    the crystal does."""
    from crystalface.dataset import PROTOTYPES

    a7 = PROTOTYPES["alpha_As"].build("As", {"c_over_a": 2.8, "x": 0.236}, False)
    cell = standard_cell(a7)
    assert not cell.info["primitive"] and cell.info["sites"] == 1 and "displacement" in cell.arrays
    assert np.ptp(np.linalg.norm(cell.arrays["displacement"], axis=1)) < 1e-9 < np.linalg.norm(cell.arrays["displacement"][0])
    np.testing.assert_array_equal(cluster(cell).positions, cluster(_without_sites(cell)).positions)


def test_ordered_displacements_have_few_lengths():
    from crystalface.cluster import _ordered

    rng = np.random.default_rng(0)
    sites = np.zeros(32, dtype=int)
    assert not _ordered(sites, rng.normal(0.0, 0.1, (32, 3)))  # thermal: every length differs
    layers = np.outer(np.tile([1.0, -1.0], 16), [0.0, 0.0, 0.15])
    assert _ordered(sites, layers)
    relaxed = np.zeros((32, 3))  # a relaxed vacancy: its eight neighbours in, the next six out
    directions = rng.normal(size=(8, 3))
    relaxed[:8] = 0.1 * directions / np.linalg.norm(directions, axis=1)[:, None]
    relaxed[8:14] = 0.03 * np.eye(3)[[0, 1, 2, 0, 1, 2]] * np.repeat([1, -1], 3)[:, None]
    assert _ordered(sites, relaxed)
    assert not _ordered(sites, relaxed + rng.normal(0.0, 0.05, (32, 3)))  # the same, hot


def test_a_ball_that_does_not_hold_the_cell_twice_is_left_as_cut():
    """A hot 250-atom cell: its ball of 256 repeats a few atoms at the edge, not the cell."""
    from ase.build import bulk

    hot = bulk("Fe", "bcc", a=2.87, cubic=True).repeat(5)
    hot.positions += np.random.default_rng(2).normal(0.0, 0.15, hot.positions.shape)
    cell = standard_cell(hot)
    assert "displacement" in cell.arrays
    np.testing.assert_array_equal(cluster(cell).positions, cluster(_without_sites(cell)).positions)


def test_the_pipeline_deals_out_the_displacements_of_a_small_hot_cell():
    """Descriptor.cluster (standard cell, then cluster) of a 16-atom bcc Fe cell at Lindemann ~0.08:
    as many atoms as the ball of the cell repeated, not in its places; the public steps agree."""
    from ase.build import bulk

    from crystalface.pipeline import Descriptor

    hot = bulk("Fe", "bcc", a=2.87, cubic=True).repeat(2)
    hot.positions += np.random.default_rng(0).normal(0.0, 0.2, hot.positions.shape)
    ball = Descriptor().cluster(hot)
    repeated = cluster(_without_sites(standard_cell(hot)))
    assert len(ball) == len(repeated)
    assert np.abs(ball.positions - repeated.positions).max() > 0.1
    np.testing.assert_array_equal(ball.positions, cluster(standard_cell(hot)).positions)
