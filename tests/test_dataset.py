"""Tests for crystalface.dataset: labelling as the paper did, the prototypes, the generator and the database."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from ase.db import connect
from ase.io import read
from ase.neighborlist import neighbor_list

import crystalface.dataset as dataset
from crystalface.classes import CLASSES
from crystalface.dataset import PROTOTYPES, generate_structures, label_structure, load_dataset, make_dataset

PROTOTYPE_DIR = Path(__file__).parents[1].parent / "shared" / "data" / "prototypes"

#: AFLOW prototype file -> class spglib must give (None: outside the eight space groups).
EXPECTED_CLASS = {
    "fcc_Cu_A_cF4_225_a.in": "fcc",
    "bcc_W_A_cI2_229_a.in": "bcc",
    "sc_alphaPo_A_cP1_221_a.in": "sc",
    "diam_C_A_cF8_227_a.in": "diam",
    "hcp_Mg_A_hP2_194_c.in": "hex/rh",
    "dhcp_alphaLa_A_hP4_194_ac.in": "hex/rh",
    "rhombAlphaAs_As_A_hR2_166_c.in": "hex/rh",
    "rhombAlphaHg_Hg_A_hR1_166_a.in": "hex/rh",
    "rhombBetaPo_Po_A_hR1_166_a.in": "hex/rh",
    "rhombAlphaSm_Sm_A_hR3_166_ac.in": "hex/rh",
    "bctIn_In_A_tI2_139_a.in": "bct139",
    "bctAlphaPa_Pa_A_tI2_139_a.in": "bct139",
    "bctBetaSn_Sn_A_tI4_141_a.in": "bct141",
    "basecorthAlphaU_U_A_oC4_63_c.in": None,
    "facecorthGammaPu_Pu_A_oF8_70_a.in": None,
    "shex_Sn_A_hP1_191_a.in": None,
    "stetBetaNp_Np_A_tP4_129_ac.in": None,
}

#: AFLOW prototype file -> (our prototype, its reference entry) for the builder check.
FILE_PROTOTYPE = {
    "fcc_Cu_A_cF4_225_a.in": ("fcc", None),
    "bcc_W_A_cI2_229_a.in": ("bcc", None),
    "sc_alphaPo_A_cP1_221_a.in": ("sc", None),
    "diam_C_A_cF8_227_a.in": ("diamond", None),
    "hcp_Mg_A_hP2_194_c.in": ("hcp", "Mg"),
    "dhcp_alphaLa_A_hP4_194_ac.in": ("dhcp", "alpha-La"),
    "rhombAlphaAs_As_A_hR2_166_c.in": ("alpha_As", "alpha-As"),
    "rhombAlphaHg_Hg_A_hR1_166_a.in": ("hR1", "alpha-Hg"),
    "rhombBetaPo_Po_A_hR1_166_a.in": ("hR1", "beta-Po"),
    "rhombAlphaSm_Sm_A_hR3_166_ac.in": ("alpha_Sm", "alpha-Sm"),
    "bctIn_In_A_tI2_139_a.in": ("tI2", "In"),
    "bctAlphaPa_Pa_A_tI2_139_a.in": ("tI2", "alpha-Pa"),
    "bctBetaSn_Sn_A_tI4_141_a.in": ("beta_Sn", "beta-Sn"),
}


def _read_prototype(name: str):
    if not PROTOTYPE_DIR.is_dir():
        pytest.skip(f"AFLOW prototype files not found at {PROTOTYPE_DIR}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # ASE's notice that aims IO moves to a plugin
        return read(PROTOTYPE_DIR / name, format="aims")


def _aflow_lattice_constant(name: str) -> float:
    """First AFLOW parameter (the conventional a, Å) from the file's comment line."""
    first = (PROTOTYPE_DIR / name).read_text().splitlines()[0]
    return float(first.split("params=")[1].split()[0].split(",")[0])


@pytest.mark.parametrize("name", sorted(EXPECTED_CLASS))
def test_label_structure_on_aflow_prototypes(name):
    number, label = label_structure(_read_prototype(name))
    assert label == EXPECTED_CLASS[name]
    assert (number is None) == (label is None)


@pytest.mark.parametrize("name", sorted(FILE_PROTOTYPE))
def test_builders_reproduce_aflow_structures(name):
    """Built at the AFLOW reference parameters, every prototype is the AFLOW structure (same neighbour shells)."""
    reference = _read_prototype(name)
    prototype_name, entry = FILE_PROTOTYPE[name]
    prototype = PROTOTYPES[prototype_name]
    params = dict(prototype.references[entry]) if entry else {}
    built = prototype.build("Cu", params, True)
    built.set_cell(built.cell[:] * _aflow_lattice_constant(name), scale_atoms=True)
    assert len(built) == len(reference)
    cutoff = 1.6 * dataset._nearest_neighbour_distance(reference)
    d_built = np.sort(neighbor_list("d", built, cutoff))
    d_reference = np.sort(neighbor_list("d", reference, cutoff))
    assert d_built.shape == d_reference.shape
    np.testing.assert_allclose(d_built, d_reference, atol=1e-4)
    assert label_structure(built)[1] == prototype.nominal


def test_reference_values_lie_inside_ranges():
    for prototype in PROTOTYPES.values():
        assert prototype.nominal in CLASSES
        for values in prototype.references.values():
            for key, value in values.items():
                low, high = prototype.ranges[key]
                assert low <= value <= high, (prototype.name, key, value)
    assert {p.nominal for p in PROTOTYPES.values()} == set(CLASSES)
    # The rhombohedral angles the AFLOW hexagonal c/a values convert to (alpha-Hg 70.7°, beta-Po 98.2°).
    assert PROTOTYPES["hR1"].references["beta-Po"]["alpha_rh"] == pytest.approx(98.2, abs=0.05)
    assert PROTOTYPES["hR1"].references["alpha-Hg"]["alpha_rh"] == pytest.approx(70.74, abs=0.05)


@pytest.mark.parametrize(
    ("prototype", "params", "expected"),
    [
        ("tI2", {"c_over_a": 1.0}, (229, "bcc")),
        ("tI2", {"c_over_a": math.sqrt(2.0)}, (225, "fcc")),
        ("hR1", {"alpha_rh": 90.0}, (221, "sc")),
        ("hR1", {"alpha_rh": 60.0}, (225, "fcc")),
        ("hR1", {"alpha_rh": math.degrees(math.acos(-1.0 / 3.0))}, (229, "bcc")),
        ("beta_Sn", {"c_over_a": math.sqrt(2.0)}, (227, "diam")),
        ("tI2", {"c_over_a": 1.52}, (139, "bct139")),
        ("hR1", {"alpha_rh": 98.2}, (166, "hex/rh")),
    ],
)
def test_special_parameters_relabel(prototype, params, expected):
    for primitive in (True, False):
        atoms = PROTOTYPES[prototype].build("W", params, primitive)
        atoms.set_cell(atoms.cell[:] * 3.1, scale_atoms=True)
        assert label_structure(atoms) == expected


def test_label_structure_rejects_near_special_and_non_periodic():
    # 1e-4 away from bcc: spglib says bcc at 1e-3 Å but bct139 at 1e-6 Å, so no label is forced.
    atoms = PROTOTYPES["tI2"].build("W", {"c_over_a": 1.0001}, True)
    atoms.set_cell(atoms.cell[:] * 3.1, scale_atoms=True)
    assert label_structure(atoms) == (None, None)
    atoms.pbc = False
    with pytest.raises(ValueError, match="periodic"):
        label_structure(atoms)


def test_a_relabelled_draw_counts_for_the_class_spglib_gives(monkeypatch):
    at_bcc = dataclasses.replace(PROTOTYPES["tI2"], ranges={"c_over_a": (1.0, 1.0)})
    monkeypatch.setitem(dataset._BY_CLASS, "bcc", (at_bcc,))
    structures = list(generate_structures(size=7, seed=0))
    info = next(info for _, info in structures if info["label"] == "bcc")
    assert info["prototype"] == "tI2" and info["spacegroup"] == 229
    assert Counter(info["label"] for _, info in structures) == Counter(CLASSES)


def test_a_class_that_cannot_be_filled_is_an_error(monkeypatch):
    at_bcc = dataclasses.replace(PROTOTYPES["tI2"], ranges={"c_over_a": (1.0, 1.0)})
    monkeypatch.setitem(dataset._BY_CLASS, "bct139", (at_bcc,))
    with pytest.raises(RuntimeError, match="could not fill class 'bct139'"):
        list(generate_structures(size=7, seed=0))


@pytest.fixture(scope="module")
def seventy():
    return list(generate_structures(size=70, seed=1))


def test_generate_structures_balanced_and_labelled(seventy):
    assert len(seventy) == 70
    assert Counter(info["label"] for _, info in seventy) == {cls: 10 for cls in CLASSES}
    assert {info["cell_choice"] for _, info in seventy} == {"primitive", "conventional", "supercell"}
    assert {info["prototype"] for _, info in seventy if info["label"] == "hex/rh"} >= {"hcp", "hR1"}
    for atoms, info in seventy:
        assert label_structure(atoms) == (info["spacegroup"], info["label"])
        assert PROTOTYPES[info["prototype"]].aflow == info["aflow"]
        assert set(PROTOTYPES[info["prototype"]].ranges) <= set(info)
        assert info["seed"] == 1
        assert 3 <= atoms.numbers[0] <= 83 and len(set(atoms.numbers)) == 1
        assert len(atoms) <= 300
        assert dataset._nearest_neighbour_distance(atoms) == pytest.approx(info["nn_distance"], rel=1e-9)
        assert 2.2 <= info["nn_distance"] <= 3.6
        for value in info.values():
            assert isinstance(value, (str, int, float)) and not isinstance(value, np.generic)


def test_supercells_are_non_cubic_repeats_of_the_conventional_cell(seventy):
    rng = np.random.default_rng(0)
    for atoms, info in seventy:
        prototype = PROTOTYPES[info["prototype"]]
        n_conventional = len(prototype.build("Cu", prototype.sample(rng), False))
        repeats = len(atoms) / n_conventional
        if info["cell_choice"] == "supercell":
            assert repeats in {2, 3, 4, 6, 9, 12, 18}  # products of (n1, n2, n3) in 1..3, not all equal
        elif info["cell_choice"] == "conventional":
            assert repeats == 1


def test_structures_are_randomly_oriented(seventy):
    # ASE builds cells with a along x; after a random rotation no cell has that.
    assert all(abs(atoms.cell[0, 1]) > 1e-6 or abs(atoms.cell[0, 2]) > 1e-6 for atoms, _ in seventy)


def test_generate_structures_deterministic(seventy):
    again = list(generate_structures(size=70, seed=1))
    for (a, info_a), (b, info_b) in zip(seventy, again, strict=True):
        assert info_a == info_b
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.cell[:], b.cell[:])
        np.testing.assert_array_equal(a.numbers, b.numbers)
    other = list(generate_structures(size=70, seed=2))
    assert [info["nn_distance"] for _, info in other] != [info["nn_distance"] for _, info in seventy]


def test_generate_structures_quota_remainder():
    labels = Counter(info["label"] for _, info in generate_structures(size=9, seed=0))
    assert labels == Counter({"bcc": 2, "bct139": 2, "bct141": 1, "diam": 1, "fcc": 1, "hex/rh": 1, "sc": 1})


@pytest.mark.parametrize(("size", "seed"), [(0, 0), (-3, 0), (2.5, 0), (7, -1), (7, 1.5)])
def test_generate_structures_validates(size, seed):
    with pytest.raises(ValueError, match="size" if seed == 0 else "seed"):
        generate_structures(size=size, seed=seed)


def test_make_and_load_dataset(tmp_path):
    path = make_dataset(tmp_path / "train.db", size=21, seed=5, progress=False)
    assert path == tmp_path / "train.db" and path.is_file()
    assert not list(tmp_path.glob("*.partial"))

    atoms, labels, infos = load_dataset(path)
    expected = list(generate_structures(size=21, seed=5))
    assert len(atoms) == len(labels) == len(infos) == 21
    assert Counter(labels) == {cls: 3 for cls in CLASSES}
    for a, label, info, (b, info_b) in zip(atoms, labels, infos, expected, strict=True):
        assert label == info["label"] == info_b["label"]
        assert info == pytest.approx(info_b)
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-12)
        np.testing.assert_allclose(a.cell[:], b.cell[:], atol=1e-12)

    db = connect(path)
    assert db.count(label="fcc") == 3
    assert db.count(prototype="tI2") == 3
    metadata = db.metadata
    assert metadata["size"] == 21 and metadata["seed"] == 5
    assert metadata["crystalface_version"]
    assert metadata["generator"] == "crystalface.dataset.generate_structures"
    assert set(metadata["prototypes"]) == set(PROTOTYPES)


def test_make_dataset_refuses_to_overwrite(tmp_path):
    path = make_dataset(tmp_path / "train.db", size=7, seed=0, progress=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_dataset(path, size=7, seed=1, progress=False)
    assert connect(path).metadata["seed"] == 0
    make_dataset(path, size=14, seed=1, progress=False, overwrite=True)
    assert connect(path).count() == 14 and connect(path).metadata["seed"] == 1


def test_make_dataset_validates_path(tmp_path):
    with pytest.raises(ValueError, match=r"\.db"):
        make_dataset(tmp_path / "train.json", size=7, progress=False)
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()
