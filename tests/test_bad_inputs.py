"""The bad-input corpus: every kind of broken or unusual input gets its documented answer, via the CLI.

Each test writes one bad input (generated here, in ``tmp_path``) followed by a good file and runs
``crystalface classify --json``: the bad input gives either a one-line error naming the file, the
frame and the reason (on stdout as JSON and on stderr, exit status 1), or, when it is a legitimate
structure outside what the model knows, a prediction with ``"confident": false``; never a traceback,
and the good file after it is still classified. The table of behaviours is in docs/reliability.md.

The model is the shipped one; set CRYSTALFACE_TEST_MODEL=/path/to/model.safetensors to test another.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.io import write

from crystalface.cli import main
from crystalface.examples import REAL_CRYSTALS, random_rotation
from crystalface.model import _default_path

CRYSTALS = {c.name: c for c in REAL_CRYSTALS}


@pytest.fixture(scope="module")
def model_path() -> Path:
    path = Path(os.environ.get("CRYSTALFACE_TEST_MODEL", _default_path()))
    if not path.is_file():
        pytest.skip(f"no trained model at {path}")
    return path


@pytest.fixture
def good(tmp_path) -> Path:
    path = tmp_path / "good_Fe.cif"
    write(path, random_rotation(CRYSTALS["Fe"].conventional(), seed=1))
    return path


def classify(model_path, capsys, *files):
    """Run the CLI on ``files``; return (exit status, JSON records, stderr lines)."""
    code = main(["classify", "--json", "--workers", "1", "--model", str(model_path), *map(str, files)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, [json.loads(line) for line in out.splitlines()], err.splitlines()


def assert_good_classified(record, good):
    assert record["source"] == str(good) and record["label"] == "bcc" and record["confident"] is True


def assert_refused(model_path, capsys, bad, good, reason, index=0):
    """``bad`` gives exactly one error record naming file, frame and ``reason``, and the batch goes on."""
    code, records, err = classify(model_path, capsys, bad, good)
    assert code == 1
    assert len(records) == 2, records
    record = records[0]
    assert set(record) == {"source", "index", "error"}
    assert record["source"] == str(bad) and record["index"] == index
    assert reason in record["error"] and "\n" not in record["error"]
    assert err[0] == "crystalface: 1 of 2 structures could not be classified:"
    where = f"{bad}" if index == -1 else f"{bad} [{index}]"  # -1: the whole file, no frame number
    assert err[1:] == [f"  {where}: {record['error']}", "crystalface: 1 classified: bcc 1 (1 confident); 1 failed"]
    assert_good_classified(records[1], good)
    return record


def assert_flagged(model_path, capsys, path, good, label=None):
    """``path`` is classified, but flagged as not confident (score below the threshold)."""
    code, records, err = classify(model_path, capsys, path, good)
    # nothing on stderr but the summary of the run: two classified, one of them confident
    assert code == 0 and len(err) == 1
    assert err[0].startswith("crystalface: 2 classified: ") and err[0].endswith("; 0 failed")
    assert err[0].count(" (1 confident)") == 1 and "(2 confident)" not in err[0]
    record = records[0]
    assert record["confident"] is False and record["score"] < 0.5
    if label is not None:
        assert record["label"] == label
    assert_good_classified(records[1], good)
    return record


def _extxyz(tmp_path, name, atoms) -> Path:
    path = tmp_path / name
    write(path, atoms, format="extxyz")
    return path


# ---------------------------------------------------------------------------------------------
# Files that hold no structure


def test_empty_file(model_path, capsys, tmp_path, good):
    bad = tmp_path / "empty.cif"
    bad.write_text("")
    assert_refused(model_path, capsys, bad, good, "empty file", index=-1)


@pytest.mark.parametrize("name, content, reason", [
    ("notes.txt", "Dear colleague,\nplease find the structures attached.\n", "cannot guess the file format"),
    ("notes.cif", "Dear colleague,\nplease find the structures attached.\n", "parse error"),
    ("noise.xyz", "\x00\x01\x02garbage\xff\n" * 3, "parse error"),
])
def test_a_file_that_is_not_a_structure(model_path, capsys, tmp_path, good, name, content, reason):
    bad = tmp_path / name
    bad.write_bytes(content.encode("latin-1"))
    assert_refused(model_path, capsys, bad, good, reason, index=-1)


def test_truncated_cif(model_path, capsys, tmp_path, good):
    full = tmp_path / "full.cif"
    write(full, CRYSTALS["Cu"].conventional())
    text = full.read_text()
    bad = tmp_path / "truncated.cif"
    bad.write_text(text[: text.index("Cu2") + 10])  # cut inside the second atom's row
    assert_refused(model_path, capsys, bad, good, "parse error: RuntimeError: CIF loop ended unexpectedly", index=-1)


def test_a_batch_where_everything_fails(model_path, capsys, tmp_path):
    broken = CRYSTALS["Cu"].conventional()
    broken.positions[0] = np.inf
    path = _extxyz(tmp_path, "all_bad.extxyz", [broken, Atoms("Cu", positions=[[0, 0, 0]])])
    code, records, err = classify(model_path, capsys, path)
    assert code == 1 and [r["index"] for r in records] == [0, 1] and all("error" in r for r in records)
    assert err[0] == "crystalface: 2 of 2 structures could not be classified:"
    assert err[-1] == "crystalface: 0 classified, 2 failed"


def test_a_bad_frame_in_a_trajectory_fails_alone(model_path, capsys, tmp_path, good):
    broken = CRYSTALS["Cu"].conventional()
    broken.positions[2] = np.nan
    path = _extxyz(tmp_path, "md.extxyz", [CRYSTALS["Cu"].conventional(), broken, CRYSTALS["Cu"].conventional()])
    code, records, err = classify(model_path, capsys, path, good)
    assert code == 1
    assert [(r["index"], r.get("label"), "error" in r) for r in records[:3]] == [(0, "fcc", False), (1, None, True), (2, "fcc", False)]
    assert err[1:] == [f"  {path} [1]: atomic positions contain NaN or infinity",
                       "crystalface: 3 classified: fcc 2 (2 confident), bcc 1 (1 confident); 1 failed"]
    assert_good_classified(records[3], good)


# ---------------------------------------------------------------------------------------------
# Structures the method cannot handle: refused with the reason


def test_zero_cell(model_path, capsys, tmp_path, good):
    bad = _extxyz(tmp_path, "zero_cell.extxyz", Atoms("Cu4", positions=np.eye(4, 3) * 2.5, cell=np.zeros((3, 3)), pbc=True))
    assert_refused(model_path, capsys, bad, good, "the method needs three lattice vectors")


def test_singular_cell(model_path, capsys, tmp_path, good):
    cell = [[3.6, 0, 0], [0, 3.6, 0], [3.6, 3.6, 0]]  # the third vector is the sum of the others
    bad = _extxyz(tmp_path, "singular.extxyz", Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 0]], cell=cell, pbc=True))
    assert_refused(model_path, capsys, bad, good, "linearly dependent (singular cell)")


@pytest.mark.parametrize("cell, length", [
    ([[0, 0, 1], [0, 1e-9, 0], [1, 0, 2]], "1e-09"),  # ASE's Niggli reduction never ended on it
    ([[1, 0, 1], [0, 1, 1], [1.4e-27, 0, 0]], "1.4e-27"),  # ASE's Minkowski reduction overflowed
    ([[5, 0, 0], [5.05, 0.01, 0], [0, 0, 5]], "0.051"),  # every vector long, their difference not
])
def test_a_lattice_vector_shorter_than_any_bond(model_path, capsys, tmp_path, good, cell, length):
    # not singular (volume / product of the edges >= 1e-6), but every atom sits on its own images:
    # cells the long fuzz run found
    bad = _extxyz(tmp_path, "needle.extxyz", Atoms("H3", positions=[[0, 0, 0], [0.5, 0, 0], [0, 0, 0.5]], cell=cell, pbc=True))
    assert_refused(model_path, capsys, bad, good, f"a lattice vector is only {length} Å long (shorter than 0.1 Å)")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_positions(model_path, capsys, tmp_path, good, value):
    atoms = CRYSTALS["Cu"].conventional()
    atoms.positions[1, 2] = value
    bad = _extxyz(tmp_path, "nan.extxyz", atoms)
    assert_refused(model_path, capsys, bad, good, "atomic positions contain NaN or infinity")


def test_two_atoms_on_the_same_spot(model_path, capsys, tmp_path, good):
    atoms = CRYSTALS["Cu"].conventional().repeat(2)
    atoms.positions[5] = atoms.positions[3] + [0.0, 0.0, 0.01]
    bad = _extxyz(tmp_path, "overlap.extxyz", atoms)
    assert_refused(model_path, capsys, bad, good, "atoms 3 and 5 are closer than 0.1 Å (atoms on the same spot)")


def test_same_spot_across_the_cell_boundary(model_path, capsys, tmp_path, good):
    atoms = CRYSTALS["Cu"].conventional()
    atoms.positions[1] = atoms.positions[0] + atoms.cell[0] - [0.02, 0, 0]  # the same site, one period away
    bad = _extxyz(tmp_path, "overlap_pbc.extxyz", atoms)
    assert_refused(model_path, capsys, bad, good, "(atoms on the same spot)")


def test_one_atom_without_a_cell(model_path, capsys, tmp_path, good):
    bad = tmp_path / "atom.xyz"
    bad.write_text("1\nan isolated atom\nCu 0 0 0\n")
    assert_refused(model_path, capsys, bad, good, "the method needs three lattice vectors")


def test_molecule_without_a_cell(model_path, capsys, tmp_path, good):
    bad = tmp_path / "benzene.xyz"
    write(bad, molecule("C6H6"))
    assert_refused(model_path, capsys, bad, good, "pbc=[False, False, False] and a cell of rank 0")


def test_unknown_element(model_path, capsys, tmp_path, good):
    bad = tmp_path / "unknown.extxyz"
    bad.write_text('2\nLattice="3.0 0.0 0.0 0.0 3.0 0.0 0.0 0.0 3.0" Properties=species:S:1:pos:R:3 pbc="T T T"\n'
                   "Cu 0.0 0.0 0.0\nX 1.5 1.5 1.5\n")
    assert_refused(model_path, capsys, bad, good, "unknown element (atomic number 0, symbol 'X') at atom 1")


def test_unknown_element_symbol_is_a_parse_error(model_path, capsys, tmp_path, good):
    bad = tmp_path / "made_up.extxyz"
    bad.write_text('1\nLattice="3.0 0.0 0.0 0.0 3.0 0.0 0.0 0.0 3.0" Properties=species:S:1:pos:R:3 pbc="T T T"\n'
                   "Qq 0.0 0.0 0.0\n")
    assert_refused(model_path, capsys, bad, good, "parse error: KeyError", index=-1)


# ---------------------------------------------------------------------------------------------
# Legitimate structures: classified, flagged when outside what the model knows


def test_one_atom_in_a_cell_is_a_simple_cubic_crystal(model_path, capsys, tmp_path, good):
    path = _extxyz(tmp_path, "one.extxyz", Atoms("Po", cell=[3.36, 3.36, 3.36], pbc=True))
    code, records, _ = classify(model_path, capsys, path, good)
    assert code == 0
    assert records[0]["label"] == "sc" and records[0]["confident"] is True
    assert_good_classified(records[1], good)


def test_two_atoms_in_a_1000_angstrom_cell(model_path, capsys, tmp_path, good):
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]], cell=[1000, 1000, 1000], pbc=True)
    record = assert_flagged(model_path, capsys, _extxyz(tmp_path, "dimer_in_box.extxyz", atoms), good)
    assert record["score"] == 0.0  # no bulk crystal: rejected by the domain test, not by the network


def test_molecule_in_a_box(model_path, capsys, tmp_path, good):
    c60 = molecule("C60")
    c60.set_cell([20, 20, 20])
    c60.center()
    c60.pbc = True
    assert_flagged(model_path, capsys, _extxyz(tmp_path, "c60.extxyz", c60), good)


def test_slab_with_20_angstrom_vacuum(model_path, capsys, tmp_path, good):
    slab = fcc111("Cu", size=(4, 4, 6), vacuum=10.0, periodic=True)  # 10 Å on each side: a 20 Å gap
    del slab.info["adsorbate_info"]  # a dict extended XYZ cannot store
    assert_flagged(model_path, capsys, _extxyz(tmp_path, "slab.extxyz", slab), good)


def test_mixed_species(model_path, capsys, tmp_path, good):
    path = tmp_path / "NaCl.cif"
    write(path, bulk("NaCl", "rocksalt", a=5.64, cubic=True))
    record = assert_flagged(model_path, capsys, path, good)
    assert record["score"] == 0.0
    assert set(record["probabilities"]) and abs(sum(record["probabilities"].values()) - 1) < 1e-4


def test_amorphous_periodic_cell(model_path, capsys, tmp_path, good):
    """A melt-quench-like cell: a 4x4x4 fcc supercell with Gaussian noise of a third of the bond length."""
    atoms = CRYSTALS["Cu"].conventional().repeat(4)
    rng = np.random.default_rng(0)
    atoms.positions += rng.normal(0, 0.33 * 2.556, size=atoms.positions.shape)
    # the noise may put two atoms on one spot, which is refused; this seed does not
    assert_flagged(model_path, capsys, _extxyz(tmp_path, "amorphous.extxyz", atoms), good)


def test_a_cell_of_100000_atoms_is_classified(model_path, capsys, tmp_path, good):
    """How long large cells take is measured by benchmarks/large_cells.py, not here."""
    atoms = CRYSTALS["Cu"].conventional().repeat((30, 30, 28))
    assert len(atoms) >= 100_000
    path = tmp_path / "big.traj"
    write(path, random_rotation(atoms, seed=3))
    code, records, _ = classify(model_path, capsys, path, good)
    assert code == 0
    assert records[0]["label"] == "fcc" and records[0]["confident"] is True
    assert_good_classified(records[1], good)


# ---------------------------------------------------------------------------------------------
# Bad model files (tampered weights and other descriptors: tests/test_model.py)


class _Payload:
    """Unpickling this runs a shell command that creates the file ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def pickled_model(model_path, tmp_path):
    """A torch pickle renamed .safetensors, with a model card whose SHA-256 matches it (both forged)."""
    import hashlib

    import torch

    marker = tmp_path / "code_was_executed"
    weights = tmp_path / "forged.safetensors"
    torch.save({"features.0.weight": _Payload(marker)}, weights)
    card = json.loads(model_path.with_suffix(".json").read_text())
    card["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    from crystalface.model import _card_digest

    card["card_sha256"] = _card_digest(card)
    weights.with_suffix(".json").write_text(json.dumps(card))
    return weights, marker


def test_a_pickle_renamed_safetensors_is_never_executed(pickled_model):
    from crystalface import load_model

    weights, marker = pickled_model
    with pytest.raises(Exception):
        load_model(weights)
    assert not marker.exists()


def test_a_pickle_renamed_safetensors_is_refused_with_a_clear_message(pickled_model, capsys, good):
    weights, marker = pickled_model
    code = main(["classify", "--json", "--workers", "1", "--model", str(weights), str(good)])
    err = capsys.readouterr().err
    assert code == 2 and "cannot be loaded" in err and "Traceback" not in err
    assert not marker.exists()
