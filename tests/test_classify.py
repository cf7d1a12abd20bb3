"""Tests of crystalface.classify with the shipped model: the acceptance cases of the first release."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

import crystalface
from crystalface import Prediction, StructureError, classify, displace, read_structures, vacancies
from crystalface.cell import check_periodic
from crystalface.examples import REAL_CRYSTALS, random_rotation, supercell_near
from crystalface.scaling import nearest_neighbour_distance

CRYSTALS = {c.name: c for c in REAL_CRYSTALS}




def _defective(atoms: Atoms, defect: str, seed: int) -> Atoms:
    if defect == "vacancies 25 %":
        return vacancies(atoms, 0.25, seed=seed)
    if defect == "sigma 0.04 A":
        return displace(atoms, 0.04, seed=seed)
    return atoms


def test_real_supercells_written_to_extxyz_are_classified_right(model, tmp_path):
    """Randomly rotated ~256-atom periodic supercells of real crystals, pristine and defective, via extended XYZ."""
    expected = []
    frames = []
    for i, crystal in enumerate(REAL_CRYSTALS):
        base = random_rotation(supercell_near(crystal.conventional(), 256), seed=10 + i)
        for j, defect in enumerate(("pristine", "vacancies 25 %", "sigma 0.04 A")):
            frames.append(_defective(base, defect, seed=100 * i + j))
            expected.append((crystal.name, defect, crystal.label))
    path = tmp_path / "real.extxyz"
    write(path, frames, format="extxyz")
    entries = list(read_structures(path))
    assert len(entries) == len(frames) and all(e.error is None for e in entries)
    predictions = classify([e.atoms for e in entries], model=model)
    wrong = [(name, defect, label, p.label, round(p.probability, 3))
             for (name, defect, label), p in zip(expected, predictions) if p.label != label]
    assert not wrong, wrong
    assert all(p.source == str(path) for p in predictions)
    assert [p.index for p in predictions] == list(range(len(frames)))


def test_periodic_crystals_with_half_of_their_sites_vacant_are_classified_right(model):
    """The paper's 50-60 % vacancy levels on periodic inputs: the lattice is found and the ball is the pristine one."""
    from crystalface import Descriptor

    structures, expected = [], []
    for i, crystal in enumerate(REAL_CRYSTALS):
        base = random_rotation(supercell_near(crystal.primitive(), 256), seed=20 + i)
        for j, fraction in enumerate((0.5, 0.6)):
            structures.append(vacancies(base, fraction, seed=10 * i + j))
            expected.append((crystal.name, fraction, crystal.label))
    # Cu at 50 %: a ball of as many sites as the pristine one, so about half as many atoms
    cluster = Descriptor().cluster(structures[0])
    assert 0.4 * 256 < len(cluster) < 0.6 * 256
    predictions = classify(structures, model=model)
    wrong = [(name, fraction, label, p.label, round(p.probability, 3))
             for (name, fraction, label), p in zip(expected, predictions) if p.label != label]
    assert not wrong, wrong


@pytest.mark.parametrize("name", [c.name for c in REAL_CRYSTALS])
@pytest.mark.parametrize("defect", ["pristine", "vacancies 25 %"])
def test_the_cell_choice_does_not_change_the_class(model, name, defect):
    crystal = CRYSTALS[name]
    choices = {
        "primitive": crystal.primitive(),
        "conventional": crystal.conventional(),
        "supercell 2x3x4": crystal.conventional().repeat((2, 3, 4)),
    }
    if defect == "pristine":
        structures = [random_rotation(a, seed=k) for k, a in enumerate(choices.values())]
    else:
        # vacancies need room: each cell choice is repeated to ~256 atoms (differently shaped
        # supercells of the three cells) before a quarter of its atoms are removed
        structures = [random_rotation(_defective(supercell_near(a, 256), defect, seed=k), seed=k)
                      for k, a in enumerate(choices.values())]
    labels = [p.label for p in classify(structures, model=model)]
    assert labels == [crystal.label] * 3, dict(zip(choices, labels))


def test_single_structure_gives_a_prediction_with_every_class(model):
    p = classify(CRYSTALS["Cu"].primitive(), model=model)
    assert isinstance(p, Prediction)
    assert p.label == "fcc"
    assert list(p.probabilities) == list(model.classes)
    assert np.isclose(sum(p.probabilities.values()), 1.0, atol=1e-5)
    record = p.to_dict()
    assert set(record) == {"source", "index", "label", "confident", "score", "reason", "novelty", "probabilities"}
    assert record["confident"] is True and 0.5 <= record["score"] <= 1 and record["reason"] is None


def test_a_failing_structure_does_not_stop_the_batch(model):
    molecule = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    good = CRYSTALS["Fe"].primitive()
    with pytest.warns(UserWarning, match="1 of 3"):
        results = classify([good, molecule, good], model=model)
    assert [r.label for r in results] == ["bcc", None, "bcc"]
    assert "lattice vectors" in results[1].error
    assert set(results[1].to_dict()) == {"source", "index", "error"}


def test_a_list_on_two_processes_gives_what_one_process_gives(model):
    # more than one chunk (batch.CHUNK), so the pool runs every step on its chunks; a failure in a
    # later chunk fails alone, is counted in the warning, and no structure given is changed
    crystals = [CRYSTALS[name] for name in ("Cu", "Fe", "Mg", "alpha-Po", "Si")]
    structures = [displace(c.primitive().repeat(2), 0.02, seed=i) for i, c in enumerate(crystals * 20)]
    structures.insert(70, Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]))
    before = [(a.positions.copy(), dict(a.info)) for a in structures]
    with pytest.warns(UserWarning, match="^1 of 101 structures"):
        two = classify(structures, model=model, workers=2)
    with pytest.warns(UserWarning, match="^1 of 101 structures"):
        one = classify(structures, model=model, workers=1)
    assert [p.to_dict() for p in two] == [p.to_dict() for p in one]
    assert two[70].label is None and "lattice vectors" in two[70].error
    assert [p.label for p in two[:5]] == [c.label for c in crystals]
    assert all(np.array_equal(a.positions, pos) and a.info == info for a, (pos, info) in zip(structures, before))


def test_a_structure_that_breaks_a_step_unexpectedly_fails_alone(model, monkeypatch):
    # a library failing on odd input (ASE's Niggli reduction did, on a needle-thin cell) or a bug: the
    # structure gets a one-line "internal error", the others are classified
    import crystalface.pipeline as pipeline

    real = pipeline.standard_cell

    def standard_cell(atoms, *args, **kwargs):
        if atoms.info.get("breaks"):
            raise RuntimeError("Niggli reduction not done in 10000 steps!\ng=[...]")
        return real(atoms, *args, **kwargs)

    monkeypatch.setattr(pipeline, "standard_cell", standard_cell)
    odd, good = CRYSTALS["Cu"].primitive(), CRYSTALS["Fe"].primitive()
    odd.info["breaks"] = True
    with pytest.warns(UserWarning, match="1 of 3"):
        results = classify([good, odd, good], model=model, workers=1)
    assert [r.label for r in results] == ["bcc", None, "bcc"]
    assert results[1].error == "internal error: RuntimeError: Niggli reduction not done in 10000 steps!"
    with pytest.raises(RuntimeError, match="^internal error: RuntimeError: Niggli"):  # alone: not a StructureError
        classify(odd, model=model, workers=1)


def test_a_path_or_anything_but_atoms_is_a_type_error_that_says_what_to_do(model, tmp_path):
    with pytest.raises(TypeError, match="not a path .*read_structures"):
        classify(str(tmp_path / "Cu.cif"), model=model)
    with pytest.raises(TypeError, match="item 1 is of type str"):
        classify([CRYSTALS["Cu"].primitive(), "Fe.cif"], model=model)


STEPS = {  # every public step of the pipeline, called as a newcomer would
    "standard_cell": lambda a: crystalface.standard_cell(a), "primitive_lattice": lambda a: crystalface.primitive_lattice(a),
    "check_periodic": lambda a: check_periodic(a), "cluster": lambda a: crystalface.cluster(a),
    "scale": lambda a: crystalface.scale(a), "nearest_neighbour_distance": lambda a: nearest_neighbour_distance(a),
    "fingerprint": lambda a: crystalface.fingerprint(a), "fingerprint_reference": lambda a: crystalface.fingerprint_reference(a),
    "displace": lambda a: crystalface.displace(a, 0.1), "vacancies": lambda a: crystalface.vacancies(a, 0.1),
    "Descriptor": lambda a: crystalface.Descriptor()(a), "compute_fingerprints": lambda a: crystalface.compute_fingerprints(a, workers=1),
}


@pytest.mark.parametrize("step", sorted(STEPS))
def test_every_step_given_a_path_says_to_read_it_first(step, tmp_path):
    # was AttributeError: 'str' object has no attribute 'positions' (or, for compute_fingerprints, one error per character)
    with pytest.raises(TypeError, match=f"^{step} takes ase.Atoms, not a path .*ase.io.read"):
        STEPS[step](str(tmp_path / "Cu.cif"))


@pytest.mark.parametrize("step", ["fingerprint", "compute_fingerprints"])
def test_steps_that_take_many_structures_name_the_item_that_is_not_atoms(step):
    with pytest.raises(TypeError, match=f"^{step} takes ase.Atoms; item 1 is of type dict"):
        STEPS[step]([CRYSTALS["Cu"].primitive(), {}])


def test_a_single_failing_structure_raises_a_one_line_error(model):
    with pytest.raises(StructureError, match="lattice vectors"):
        classify(Atoms("Cu", positions=[[0, 0, 0]]), model=model)


def test_classify_does_not_modify_the_input(model):
    atoms = random_rotation(CRYSTALS["beta-Sn"].conventional(), seed=3)
    before = (atoms.positions.copy(), atoms.cell[:].copy(), dict(atoms.info))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        classify([atoms], model=model)
    assert np.array_equal(atoms.positions, before[0]) and np.array_equal(atoms.cell[:], before[1])
    assert atoms.info == before[2]


def test_same_input_gives_identical_output(model):
    atoms = random_rotation(supercell_near(CRYSTALS["Mg"].conventional()), seed=5)
    a = classify(atoms, model=model).probabilities
    b = classify(atoms, model=model).probabilities
    assert a == b


def test_crystals_of_no_class_are_not_confident(model, data_dir):
    """The shipped model's novelty flags elemental crystals of other structure types (docs/reliability.md)."""
    from conftest import read_aims

    from crystalface.confidence import NOVELTY_LIMIT

    a = 5.05  # A15 (beta-W), space group 223: none of the seven classes
    a15 = Atoms("W8", cell=[a, a, a], pbc=True, scaled_positions=[
        (0, 0, 0), (0.5, 0.5, 0.5), (0.25, 0.5, 0), (0.75, 0.5, 0), (0, 0.25, 0.5), (0, 0.75, 0.5), (0.5, 0, 0.25), (0.5, 0, 0.75)])
    gamma_pu = read_aims(data_dir / "prototypes" / "facecorthGammaPu_Pu_A_oF8_70_a.in")  # Fddd
    unknown = classify([a15, gamma_pu], model=model)
    assert all(p.novelty > NOVELTY_LIMIT and not p.confident and p.score == 0 for p in unknown), unknown
    known = classify(CRYSTALS["Cu"].primitive(), model=model)
    assert known.confident and known.novelty < 1


@pytest.mark.parametrize("name", ["HexDiam_C_A_hP4_194_f", "basecorthMolIod_I_A_oC8_64_f", "stetBetaNp_Np_A_tP4_129_ac"])
def test_a_label_the_basis_contradicts_is_not_confident(model, data_dir, name):
    """Hexagonal diamond (4 sites, called diam), molecular iodine (4, called bct141) and beta-Np (4, called
    bct139) come out of the network with a high probability and low novelty; the lattice the standard cell
    finds has more sites per primitive cell than the label's class can have (docs/reliability.md)."""
    from conftest import read_aims

    from crystalface.classes import BASIS_SITES

    atoms = read_aims(data_dir / "prototypes" / f"{name}.in")
    for structure in (atoms, random_rotation(supercell_near(atoms), seed=1)):
        p = classify(structure, model=model)
        assert 4 not in BASIS_SITES[p.label] and p.probabilities[p.label] > 0.5, p
        assert not p.confident and p.score == 0, p
    # real crystals of every class keep their confidence, with the basis of their class
    for crystal in CRYSTALS.values():
        for structure in (crystal.primitive(), random_rotation(supercell_near(crystal.conventional()), seed=2)):
            p = classify(structure, model=model)
            assert p.label == crystal.label and p.confident, (crystal.name, p)


def test_every_prediction_that_is_not_confident_says_why(model, data_dir):
    from ase.build import bulk, fcc111
    from conftest import read_aims

    cases = {
        "more than one element (Cl, Na)": bulk("NaCl", "rocksalt", a=5.64),
        "of the cell is vacuum": fcc111("Cu", (2, 2, 4), vacuum=10.0, periodic=True),
        "4 sites per primitive cell; a diam crystal has 2": read_aims(data_dir / "prototypes" / "HexDiam_C_A_hP4_194_f.in"),
        "novelty": read_aims(data_dir / "prototypes" / "shex_Sn_A_hP1_191_a.in"),
        "no lattice finer than a cell of 256 atoms": displace(supercell_near(CRYSTALS["Cu"].conventional()), 0.8, seed=1),
        # 256 atoms at Lindemann 0.14: the lattice is still found (one site), the Bragg peaks are washed out
        "weak Bragg peaks": displace(CRYSTALS["Cu"].conventional().repeat(4), 0.35, seed=1),
    }
    predictions = classify(list(cases.values()), model=model)
    for expected, p in zip(cases, predictions):
        assert not p.confident and expected in p.reason, (expected, p.reason)
        assert p.to_dict()["reason"] == p.reason
    confident = classify(CRYSTALS["Fe"].primitive(), model=model)
    assert confident.confident and confident.reason is None
