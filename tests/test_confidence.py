"""The confidence step's pieces: Bragg fraction of a fingerprint and the vacuum check of a structure."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111
from conftest import read_aims, rotated

from crystalface.cell import LatticeFound
from crystalface.confidence import (TOP_PIXELS, assess, assess_with_reasons, basis_problem, bragg_fraction, domain_problem,
                                   lattice_confirms, lattice_problem, vacuum_fraction)
from crystalface.fingerprint import DF2D


def _hot(pristine: Atoms, sigma: float, seed: int) -> Atoms:
    """A copy of ``pristine`` with Gaussian noise of ``sigma`` Å per axis on every atom, from ``default_rng(seed)``."""
    hot = pristine.copy()
    hot.positions += np.random.default_rng(seed).normal(0.0, sigma, hot.positions.shape)
    return hot


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


def test_the_pipeline_measures_the_vacuum_with_the_standard_cells_neighbours():
    """compute_fingerprints(return_sites=True) measures each input's vacuum fraction right after its
    standard cell, looking up the tree and nearest-neighbour distance that measured, not building
    them again (one tree per structure: built by the standard cell's check of atoms on one spot,
    looked up by its lattice search and by the vacuum check); assess takes it from the records
    instead of measuring it once more."""
    from crystalface.cell import _neighbours_bytes
    from crystalface.pipeline import compute_fingerprints

    slab = fcc111("Cu", (3, 3, 4), vacuum=8.0, periodic=True)
    structures = [rotated(bulk(name, kind, a=a, cubic=True).repeat(3), seed)
                  for seed, (name, kind, a) in enumerate([("Cu", "fcc", 3.6), ("Fe", "bcc", 2.87), ("Si", "diamond", 5.43)])]
    structures.append(slab)
    before = _neighbours_bytes.cache_info()
    images, errors, lattices = compute_fingerprints(structures, workers=1, return_sites=True)
    after = _neighbours_bytes.cache_info()
    assert errors == [None] * 4 and (after.misses - before.misses, after.hits - before.hits) == (4, 8)
    assert [f.vacuum for f in lattices] == [vacuum_fraction(a) for a in structures]
    assert lattices[0].vacuum == 0.0 and lattices[3].vacuum > 0.2
    # the records' vacuum decides the domain problem: no second measurement
    proba = np.tile([[0.02, 0.98]], (4, 1))
    reasons = assess_with_reasons(proba, images, structures, lattices=lattices)[2]
    assert reasons[:3] == [None] * 3 and reasons[3] == domain_problem(slab)
    faked = [f._replace(vacuum=0.5) for f in lattices[:1]]
    assert assess_with_reasons(proba[:1], images[:1], structures[:1], lattices=faked)[2][0].startswith("50 % of the cell")


def _vacuum_by_brute_force(atoms, distance=2.0, n_points=512, seed=0) -> float:
    """The definition, the slow way: distances to every atom's images in the 5 x 5 x 5 neighbouring cells."""
    from ase.geometry import minkowski_reduce

    from crystalface.cell import _scored_atoms

    cell = minkowski_reduce(atoms.cell[:])[0]
    frac = atoms.positions @ np.linalg.inv(cell)
    positions = (frac - np.floor(frac)) @ cell
    shifts = np.array([[i, j, k] for i in range(-2, 3) for j in range(-2, 3) for k in range(-2, 3)]) @ cell
    images = (positions[None] + shifts[:, None]).reshape(-1, 3)
    d = np.linalg.norm(positions[_scored_atoms(len(atoms)), None] - images[None], axis=2)
    nn = np.sort(d, axis=1)[:, 1]  # up to 64 atoms, the standard cell's (a fixed random subset)
    points = np.random.default_rng(seed).random((n_points, 3)) @ cell
    nearest = np.linalg.norm(points[:, None] - images[None], axis=2).min(axis=1)
    return float(np.mean(nearest > distance * np.median(nn)))


@pytest.mark.parametrize("padding", [1.5, 0.0])  # the default, and no padding: much is left open to the second trees
def test_vacuum_fraction_is_the_full_periodic_search(monkeypatch, padding):
    from crystalface import cell

    monkeypatch.setattr(cell, "_NEIGHBOUR_SPACINGS", padding)
    cell._neighbours_bytes.cache_clear()  # trees remembered with the other padding
    # bulk (settled by the small tree), slabs and a wire, a few atoms in a box (the nearest-neighbour
    # distance itself beyond the small tree), a crystal with a hole (points left open by the small tree)
    from ase.build import fcc100, molecule

    wire = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((1, 1, 3))
    wire.set_cell(np.diag([15.0, 15.0, wire.cell[2, 2]]))
    box = molecule("CH4")
    box.set_cell([9.0, 8.0, 10.0])
    box.pbc = True
    # dense but for a hole across the cell's corner: points near the corner whose nearest atom lies
    # beyond the small tree's padding are left open by it and need the second tree
    void = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(5)
    frac = void.get_scaled_positions()
    del void[np.linalg.norm((frac - np.round(frac)) @ void.cell[:], axis=1) < 8.5]
    structures = [bulk("Si", "diamond", a=5.43).repeat(2), fcc111("Cu", (2, 2, 4), vacuum=10.0, periodic=True),
                  fcc100("Al", (3, 3, 5), vacuum=8.0, periodic=True), wire, box, void]
    lone = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(3)  # a block and one atom far from it: that atom's
    lone.set_cell(np.diag([30.0, 30.0, 30.0]))  # nearest neighbour lies beyond the small tree
    lone += Atoms("Cu", positions=[[22.0, 22.0, 22.0]])
    structures.append(lone)
    values = [vacuum_fraction(a) for a in structures]
    assert values[0] == 0.0 and all(v > 0.01 for v in values[1:])
    assert values == [_vacuum_by_brute_force(a) for a in structures]
    cell._neighbours_bytes.cache_clear()  # not to hand later tests trees of this padding


def test_the_grid_of_the_vacuum_check_settles_only_points_with_an_atom_within_the_limit():
    """_near_in_grid (the first, cheap pass of vacuum_fraction) may leave a point open, never settle
    one whose nearest atom (brute force) lies beyond the limit, whatever the density and the limit."""
    from crystalface.confidence import _near_in_grid

    rng = np.random.default_rng(5)
    settled = 0
    for trial in range(60):
        atoms = rng.random((int(rng.integers(1, 400)), 3)) * rng.uniform(3.0, 30.0, 3) - rng.uniform(0.0, 5.0, 3)
        points = rng.random((300, 3)) * rng.uniform(3.0, 30.0, 3)
        limit = rng.uniform(0.3, 8.0)
        near = _near_in_grid(points, atoms, limit)
        nearest = np.linalg.norm(points[:, None] - atoms[None], axis=2).min(axis=1)
        assert np.all(nearest[near] < limit), trial
        settled += near.sum()
    assert settled > 1000  # it does settle points
    assert not _near_in_grid(points, atoms, 0.0).any() and not _near_in_grid(points, atoms, np.inf).any()
    assert not _near_in_grid(points, atoms, 1e-6).any()  # more cubes than it lays out: none settled


def test_basis_problem_judges_only_counts_a_class_could_have():
    assert basis_problem("diam", 2) is None and basis_problem("bct141", 2) is None
    assert basis_problem("fcc", 1) is None and all(basis_problem("hex/rh", n) is None for n in (1, 2, 3, 4))
    assert basis_problem("diam", 4) == "the lattice found has 4 sites per primitive cell; a diam crystal has 2"
    assert basis_problem("bcc", 2) is not None and basis_problem("diam", 1) is not None
    # unknown, more sites than any class has (a coarser lattice, or no class), or a class of another model
    assert basis_problem("fcc", None) is None and basis_problem("fcc", 8) is None and basis_problem("A15", 2) is None
    assert basis_problem("hex/rh", 64) is None  # the most sites the standard cell counts on a coarser lattice
    # no lattice finer than a large cell: every label, of this model or another
    assert all(basis_problem(label, 65) is not None for label in ("fcc", "hex/rh", "A15"))
    # an exact count (the structure folds onto the lattice found, one atom per site): above four, every label
    assert all(basis_problem(label, 5, fit="exact") is not None for label in ("fcc", "hex/rh", "A15"))
    assert basis_problem("hex/rh", 64, fit="exact").startswith("no lattice finer than a cell of 64 atoms was found")
    assert basis_problem("hex/rh", 4, fit="exact") is None and basis_problem("fcc", 1, fit="exact") is None
    assert basis_problem("diam", 4, fit="exact") == basis_problem("diam", 4) == basis_problem("diam", 4, fit="sites")
    assert basis_problem("fcc", 8, fit="sites") is None
    # atoms on no clear set of sites of the lattice found: every label
    assert all(basis_problem(label, None, fit="none").startswith("the atoms do not sit on the sites")
               for label in ("fcc", "hex/rh", "A15"))
    with pytest.raises(ValueError, match="fit must be one of"):
        basis_problem("fcc", 1, fit="primitive")


def test_lattice_problem_judges_non_cubic_labels_on_the_lattices_and_sites_of_cubic_classes():
    for cubic, sites, cubic_class in (("cF", 1, "fcc"), ("cI", 1, "bcc"), ("cP", 1, "sc"), ("cF", 2, "diam")):
        for label in ("bct139", "bct141", "hex/rh"):
            assert lattice_problem(label, sites, cubic) == (
                f"the lattice found is cubic ({cubic}) with {sites} site{'s' if sites > 1 else ''} per primitive cell, "
                f"as in {cubic_class}; a {label} crystal is not cubic")
        for label in ("fcc", "bcc", "sc", "diam"):  # cubic labels are not judged (a strained fcc is fcc to a user)
            assert lattice_problem(label, sites, cubic) is None
    # lattices and counts of no cubic class: beta-Sn at c/a = 1 (two sites on cI), more sites, not cubic, unknown
    assert lattice_problem("bct141", 2, "cI") is None and lattice_problem("hex/rh", 2, "cP") is None
    assert lattice_problem("hex/rh", 3, "cF") is None and lattice_problem("hex/rh", 1, None) is None
    assert lattice_problem("hex/rh", None, "cF") is None


def test_lattice_problem_judges_bct_and_hex_rh_labels_on_a_lattice_of_another_system():
    assert lattice_problem("hex/rh", 2, None, "orthorhombic") == (
        "the lattice found is orthorhombic; a hex/rh crystal's is hexagonal or rhombohedral")
    assert lattice_problem("bct139", 1, None, "hexagonal") == "the lattice found is hexagonal; a bct139 crystal's is tetragonal"
    assert lattice_problem("bct141", 2, None, "monoclinic") == "the lattice found is monoclinic; a bct141 crystal's is tetragonal"
    for label, system in (("hex/rh", "hexagonal"), ("hex/rh", "rhombohedral"), ("bct139", "tetragonal"),
                          ("bct141", "tetragonal"), ("hex/rh", None)):
        assert lattice_problem(label, 2, None, system) is None
    # a cubic system is judged by the basis alone (an hR1 lattice near 90 degrees with two sites is not sc)
    assert lattice_problem("hex/rh", 2, None, "cubic") is None
    assert lattice_problem("hex/rh", 1, "cP", "cubic") == lattice_problem("hex/rh", 1, "cP")
    for label in ("fcc", "bcc", "sc", "diam"):  # cubic labels are not judged
        assert lattice_problem(label, 1, None, "orthorhombic") is None
    # P6_3/mmc has only even multiplicities: one or three sites on a hexagonal lattice are no hex/rh crystal
    for sites in (1, 3):
        assert lattice_problem("hex/rh", sites, None, "hexagonal") == (
            f"the lattice found is hexagonal with {sites} site{'s' if sites > 1 else ''} per primitive cell; "
            "a hex/rh crystal on a hexagonal lattice has 2 or 4")
        assert lattice_problem("hex/rh", sites, None, "rhombohedral") is None  # hR1, alpha-Sm
    for sites in (2, 4, None, 5, 12):  # hcp, dhcp; unknown; more than any class has (the basis check's)
        assert lattice_problem("hex/rh", sites, None, "hexagonal") is None


@pytest.mark.parametrize("name, sites, system", [("basecorthAlphaU_U_A_oC4_63_c.in", None, "orthorhombic"),
                                                  ("basecorthAlphaGa_Ga_A_oC8_64_f.in", None, "orthorhombic"),
                                                  ("trihex_gammaSe_A_hP3_152_a.in", 3, "hexagonal")])
def test_a_crystal_of_no_class_called_hex_rh_on_a_lattice_it_cannot_have_is_not_confident(data_dir, name, sites, system):
    """alpha-U, alpha-Ga and gamma-Se are of no class; the network calls them hex/rh with P = 0.81,
    0.57 and 0.87, confidently before 0.1.7. The lattices of the first two are orthorhombic (alpha-Ga's
    1.6 % from hexagonal); gamma-Se has three sites on a hexagonal lattice, which P6_3/mmc cannot."""
    from crystalface import classify

    crystal = read_aims(data_dir / "prototypes" / name)
    for atoms in (crystal, rotated(crystal.repeat(3), 11)):
        prediction = classify(atoms)
        assert prediction.label == "hex/rh" and not prediction.confident and prediction.score == 0.0
        assert prediction.reason == lattice_problem("hex/rh", sites, None, system)


def test_hcp_in_an_orthogonal_md_box_keeps_its_confidence_unless_strained_out_of_hexagonal():
    """hcp Mg in the orthogonal box MD codes use (a x sqrt(3) a x c), with 0.1 Å of noise: a box
    stretched by 0.5 % along b (an NPT fluctuation) is still a hexagonal lattice, one stretched by
    3 % is orthorhombic, and a hex/rh label there is not confident, with that reason."""
    from crystalface import classify, displace
    from crystalface.cell import SYSTEM_TOLERANCE

    for stretch, confident in ((0.005, True), (2 * SYSTEM_TOLERANCE, False)):
        box = bulk("Mg", "hcp", a=3.21, c=5.21, orthorhombic=True).repeat((5, 3, 3))
        box.set_cell(box.cell[:] @ np.diag([1.0, 1.0 + stretch, 1.0]), scale_atoms=True)
        prediction = classify(displace(box, 0.1, seed=1))
        assert prediction.label == "hex/rh" and prediction.confident == confident
        if not confident:
            assert prediction.reason == lattice_problem("hex/rh", 2, None, "orthorhombic")


def test_a_contradicted_label_loses_its_score_and_is_named_only_when_nothing_else_sank_it():
    from crystalface import Descriptor

    cu = bulk("Cu", "fcc", a=3.6)
    crystal = Descriptor()(cu)
    speckle = np.random.default_rng(0).random(crystal.shape).astype(np.float32)  # no Bragg spots
    images = np.stack([crystal, crystal, speckle])
    proba = np.array([[0.02, 0.98], [0.02, 0.98], [0.02, 0.98]])
    lattices = [LatticeFound(1, "exact", cubic) for cubic in ("cF", None, "cF")]
    confident, values, reasons = assess_with_reasons(proba, images, [cu] * 3, labels=["hex/rh"] * 3, lattices=lattices)
    assert confident.tolist() == [False, True, False] and values[0] == 0 and values[2] == 0
    assert reasons[0] == lattice_problem("hex/rh", 1, "cF") and reasons[1] is None
    assert reasons[2].startswith("weak Bragg peaks")  # molten first, whatever the lattice says
    # where the cubic type is not known (or without labels and lattices), nothing is judged
    assert assess(proba[:1], images[:1], [cu], labels=["hex/rh"], lattices=[LatticeFound(1)])[0][0]
    assert assess(proba[:1], images[:1], [cu], labels=["hex/rh"])[0][0]
    assert assess(proba[:1], images[:1], [cu], lattices=lattices[:1])[0][0]


def test_a_label_the_lattice_proves_keeps_its_confidence_whatever_the_novelty():
    from crystalface import Descriptor

    assert [lattice_confirms(label, 1, cubic) for label, cubic in (("fcc", "cF"), ("bcc", "cI"), ("sc", "cP"))] == [True] * 3
    assert not any([lattice_confirms("fcc", 1, "cI"), lattice_confirms("diam", 2, "cF"), lattice_confirms("fcc", 2, "cF"),
                    lattice_confirms("fcc", 1, None), lattice_confirms("hex/rh", 1, "cF"), lattice_confirms("fcc", None, "cF")])
    cu = bulk("Cu", "fcc", a=3.6)
    images = np.repeat(Descriptor()(cu)[None], 4, axis=0)
    proba = np.repeat(np.array([[0.02, 0.98]]), 4, axis=0)
    novelty = np.full(4, 2.5)
    confident, values, reasons = assess_with_reasons(
        proba, images, [cu] * 4, novelty=novelty, labels=["fcc", "fcc", "fcc", "diam"],
        lattices=[LatticeFound(1, "exact", "cF"), LatticeFound(1, "exact", "cI"), LatticeFound(), LatticeFound(2, "exact", "cF")])
    assert confident.tolist() == [True, False, False, False] and values[0] > 0.9
    assert reasons[0] is None and all(r.startswith("novelty 2.50 above 2") for r in reasons[1:])
    # the novelty limit holds where the cubic type is not known
    assert not assess(proba[:1], images[:1], [cu], novelty=novelty[:1], labels=["fcc"], lattices=[LatticeFound(1)])[0][0]


def test_hot_bcc_far_from_the_training_crystals_is_confident_on_its_cubic_lattice():
    """250 atoms of bcc Fe at Lindemann 0.1 (sigma 0.25 Å per axis): the network says bcc for every
    draw, but thermal noise moves the features of some beyond twice the farthest training crystal
    (one of these ten since 0.1.9's sharper length scale, two before). Their lattice is exactly cI
    with one site, which only bcc has; before 0.1.6 those were not confident."""
    from crystalface import classify

    pristine = bulk("Fe", "bcc", a=2.87, cubic=True).repeat(5)
    far = 0
    for seed in range(10):
        prediction = classify(_hot(pristine, 0.1 * 2.4855, seed))
        assert prediction.label == "bcc" and prediction.confident
        far += prediction.novelty > 2
    assert far >= 1  # the lattice check, not the novelty, made at least one of them confident


def test_hot_diamond_called_hex_rh_in_its_md_cell_is_not_confident():
    """64 atoms of diamond Si at Lindemann 0.12 (sigma 0.28 Å per axis): the network calls six of
    these ten draws hex/rh with scores of 0.9 and more; the lattice of the cell is exactly cubic F
    with two sites, diamond's. Before the lattice check they were confidently wrong."""
    from crystalface import classify, standard_cell

    pristine = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    hex_rh = 0
    for seed in range(10):
        hot = _hot(pristine, 0.12 * 2.35126, seed)
        cell = standard_cell(hot)
        assert (cell.info["sites"], cell.info["cubic_lattice"]) == (2, "cF")
        prediction = classify(hot)
        if prediction.label == "hex/rh":
            hex_rh += 1
            assert not prediction.confident and prediction.score == 0.0
            assert prediction.reason == lattice_problem("hex/rh", 2, "cF")
        else:
            assert prediction.label == "diam" and prediction.confident
    assert hex_rh >= 3


def test_lattice_fit_reads_the_standard_cell():
    from crystalface import standard_cell
    from crystalface.cell import lattice_fit

    cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(4)
    assert lattice_fit(standard_cell(cu).info) == "exact"
    noisy = cu.copy()
    noisy.positions += np.random.default_rng(0).normal(0.0, 0.05, noisy.positions.shape)
    assert lattice_fit(standard_cell(noisy).info) == "sites" and standard_cell(noisy).info["sites"] == 1
    assert lattice_fit({"primitive": False, "occupancy": 1.0}) == "none"


def test_a_molten_md_cell_is_not_confident():
    """6912 atoms of fcc copper with 0.35 Å of noise per axis (Lindemann 0.14, beyond melting): no
    lattice finer than the cell is found, and the network's label comes from a fingerprint in the
    frame of the user's cubic cell, where the low-index views keep sharp spots (crystallinity 0.98).
    Before the count above 64 was judged this draw came out hex/rh, confident (score 0.60)."""
    from crystalface import classify

    prediction = classify(_hot(bulk("Cu", "fcc", a=3.61, cubic=True).repeat(12), 0.35, 0))
    assert not prediction.confident and prediction.score == 0.0
    assert prediction.reason.startswith("no lattice finer than a cell of 6912 atoms was found")


def test_a_molten_small_cell_is_not_confident():
    """32 atoms of fcc copper with 0.5 Å of noise per axis (Lindemann 0.2, molten), as an ab-initio MD
    cell is: no lattice finer than the cell is found, so the cell is its own primitive cell with 32
    sites, and the ball is cut from its periodic repetition, whose superlattice keeps sharp spots.
    Before exact counts of 5-64 sites were judged, 4 of these 6 draws came out confident (hex/rh, bct141)."""
    from crystalface import classify, standard_cell

    own_cell = 0
    for seed in range(6):
        hot = _hot(bulk("Cu", "fcc", a=3.615, cubic=True).repeat(2), 0.5, seed)
        prediction = classify(hot)
        assert not prediction.confident
        if standard_cell(hot).info["primitive"]:  # (a few draws find a lattice on part of the atoms)
            own_cell += 1
            assert prediction.score == 0.0
            assert prediction.reason.startswith("no lattice finer than a cell of 32 atoms was found")
    assert own_cell >= 4


def test_a_stacking_fault_in_a_small_periodic_cell_is_not_confident():
    """Twelve close-packed layers of copper, fcc stacked but for one fault (ABCABC BCABCA): the cell
    repeats with no finer lattice, a 12-site polytype. Its fingerprint is fcc-like (label fcc), but
    every class has 1-4 sites; as an MD cell of 10^5 atoms with a fault is (more than 64 sites)."""
    from ase import Atoms

    from crystalface import classify, standard_cell

    def layers(stacking: str, a: float = 2.556) -> Atoms:
        shift = {"A": (0.0, 0.0), "B": (1 / 3, 1 / 3), "C": (2 / 3, 2 / 3)}
        cell = [[a, 0, 0], [a / 2, a * np.sqrt(3) / 2, 0], [0, 0, a * np.sqrt(2 / 3) * len(stacking)]]
        frac = [(*shift[s], i / len(stacking)) for i, s in enumerate(stacking)]
        return Atoms("Cu" * len(stacking), cell=cell, pbc=True, scaled_positions=frac).repeat((2, 2, 1))

    faulted = layers("ABCABCBCABCA")
    assert standard_cell(faulted).info["sites"] == 12
    prediction = classify(faulted)
    assert prediction.label == "fcc" and not prediction.confident
    assert prediction.reason.startswith("no lattice finer than a cell of 12 atoms was found")
    assert prediction.reason.endswith("or a planar defect in every cell")
    perfect = classify(layers("ABC" * 4))
    assert perfect.label == "fcc" and perfect.confident


def test_a_hot_supercell_whose_atoms_miss_the_sites_of_its_lattice_is_not_confident():
    """256 atoms of fcc copper with 0.4 Å of noise per axis (Lindemann 0.16): in this draw a lattice
    is found on part of the atoms, but fewer than 90 % of them sit near its sites. It came out
    hex/rh, confident (score 0.80), before such a fit was judged."""
    from crystalface import classify, displace, standard_cell

    hot = displace(bulk("Cu", "fcc", a=3.615, cubic=True).repeat(4), 0.4, seed=13)
    cell = standard_cell(hot)
    assert not cell.info["primitive"] and "sites" not in cell.info
    prediction = classify(hot)
    assert not prediction.confident and prediction.score == 0.0
    assert prediction.reason.startswith("the atoms do not sit on the sites of the lattice found")


def test_assess_zeroes_the_score_of_a_label_its_basis_contradicts():
    from crystalface import Descriptor

    cu = bulk("Cu", "fcc", a=3.6)
    image = Descriptor()(cu)[None]
    proba = np.array([[0.02, 0.98]])
    assert assess(proba, image, [cu])[1][0] > 0.9
    assert assess(proba, image, [cu], labels=["fcc"], lattices=[LatticeFound(1)])[1][0] > 0.9
    assert assess(proba, image, [cu], labels=["fcc"], lattices=[LatticeFound()])[1][0] > 0.9
    confident, value = assess(proba, image, [cu], labels=["fcc"], lattices=[LatticeFound(2)])
    assert not confident[0] and value[0] == 0
    # eight sites: not judged on a lattice that may be coarser than the crystal's, judged when exact
    assert assess(proba, image, [cu], labels=["fcc"], lattices=[LatticeFound(8, "sites")])[1][0] > 0.9
    assert assess(proba, image, [cu], labels=["fcc"], lattices=[LatticeFound(8, "exact")])[1][0] == 0
    assert assess(proba, image, [cu], labels=["fcc"], lattices=[LatticeFound(None, "none")])[1][0] == 0


def test_doubts_name_the_factor_that_sank_the_score():
    from crystalface import Descriptor
    from crystalface.confidence import doubts

    cu = Descriptor()(bulk("Cu", "fcc", a=3.6))
    images = np.stack([cu, cu, np.zeros_like(cu) + np.random.default_rng(0).random(cu.shape).astype(np.float32)])
    proba = np.array([[0.40, 0.35, 0.25], [0.98, 0.01, 0.01], [0.98, 0.01, 0.01]])
    reasons = doubts(proba, images, labels=["fcc", "fcc", "fcc"], problems=[None, "a structure-level reason", None])
    assert reasons[0] == "the network hesitates: P(fcc) = 0.40"
    assert reasons[1] == "a structure-level reason"
    assert reasons[2].startswith("weak Bragg peaks (crystallinity 0.00)")  # speckle, no Bragg spots
    assert doubts(proba[1:2], images[1:2]) == [None]  # crystalline and sure: confident, no reason
    assert doubts(proba[1:2], images[1:2], novelty=np.array([2.5]))[0].startswith("novelty 2.50 above 2")
