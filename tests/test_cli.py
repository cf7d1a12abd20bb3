"""Tests of the command line: output formats, exit status, and the commands a newcomer runs first."""

from __future__ import annotations

import json

import pytest
from ase.io import write

from crystalface.cli import main
from crystalface.examples import REAL_CRYSTALS, random_rotation

CRYSTALS = {c.name: c for c in REAL_CRYSTALS}


@pytest.fixture
def files(tmp_path):
    frames = [random_rotation(CRYSTALS[n].conventional(), seed=i) for i, n in enumerate(("Cu", "Fe", "Si"))]
    xyz = tmp_path / "three.extxyz"
    write(xyz, frames, format="extxyz")
    cif = tmp_path / "Sn.cif"
    write(cif, CRYSTALS["beta-Sn"].conventional())
    broken = tmp_path / "broken.cif"
    broken.write_text("data_x\n_cell_length_a 3.6\n_atom_site_fract_x\n")
    molecule = tmp_path / "molecule.xyz"
    molecule.write_text("2\n\nH 0 0 0\nH 0 0 0.74\n")
    return {"xyz": xyz, "cif": cif, "broken": broken, "molecule": molecule}


def test_classify_json_lines(files, capsys):
    assert main(["classify", "--json", "--workers", "1", str(files["xyz"]), str(files["cif"])]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["source"], r["index"], r["label"]) for r in lines] == [
        (str(files["xyz"]), 0, "fcc"), (str(files["xyz"]), 1, "bcc"), (str(files["xyz"]), 2, "diam"),
        (str(files["cif"]), 0, "bct141"),
    ]
    assert all(set(r) == {"source", "index", "label", "confident", "score", "reason", "novelty", "probabilities"} for r in lines)
    assert all(r["confident"] is True for r in lines)
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in lines)


def test_classify_goes_on_after_failures_and_exits_1(files, capsys):
    code = main(["classify", "--json", "--workers", "1", str(files["broken"]), str(files["molecule"]), str(files["cif"])])
    assert code == 1
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [set(r) for r in lines[:2]] == [{"source", "index", "error"}] * 2
    assert "lattice vectors" in lines[1]["error"]
    assert lines[2]["label"] == "bct141"
    assert "2 of 3 structures could not be classified" in err
    assert all("\n" not in r["error"] for r in lines[:2])


def test_a_file_that_fails_whole_is_named_without_a_frame_number(files, capsys):
    # -1, the index of a record whose file failed before any frame, would read as ASE's "last frame"
    assert main(["classify", "--workers", "1", "--index", "5", str(files["xyz"])]) == 1
    out, err = capsys.readouterr()
    row = out.splitlines()[1].split()
    assert row[1:3] == ["-", "-"]
    assert f"  {files['xyz']}: no structure in the file for index '5'" in err.splitlines()


def test_classify_table(files, capsys):
    assert main(["classify", "--workers", "1", str(files["cif"])]) == 0
    out, err = capsys.readouterr()
    out = out.splitlines()
    assert out[0].split()[:4] == ["source", "frame", "class", "probability"]
    assert "bct141" in out[1]
    assert "classified" not in err  # one structure: its row says it all


def test_classify_says_what_came_out_of_many_structures(files, capsys):
    assert main(["classify", "--workers", "1", str(files["xyz"]), str(files["cif"]), str(files["molecule"])]) == 1
    err = capsys.readouterr().err
    assert "crystalface: 4 classified: fcc 1 (1 confident), bcc 1 (1 confident), diam 1 (1 confident), " \
           "bct141 1 (1 confident); 1 failed" in err.splitlines()
    assert main(["classify", "--workers", "1", "-q", str(files["xyz"])]) == 0
    assert "classified" not in capsys.readouterr().err  # -q: quiet


def test_classify_table_columns_line_up_whatever_the_length_of_the_paths(files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # paths as given: a short one and one longer than the widest column
    deep = tmp_path / ("d" * 70)
    deep.mkdir()
    (deep / "Sn.cif").write_bytes(files["cif"].read_bytes())
    assert main(["classify", "--workers", "1", "Sn.cif", f"{deep.name}/Sn.cif"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    frame = header.index("frame")
    assert all(row[frame - 2:frame] == "  " and row[frame] == "0" for row in rows)  # same column in every row
    assert rows[0].startswith("Sn.cif ")
    assert rows[1].startswith("…") and rows[1][:frame].rstrip().endswith("/Sn.cif")  # the end of a long path: its file name


def test_usage_errors_exit_2(files, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["classify"])
    assert exc.value.code == 2
    assert main(["classify", "--model", str(files["cif"]) + ".nothing", str(files["cif"])]) == 2
    assert "model file not found" in capsys.readouterr().err
    blocked = files["cif"].parent / "three.extxyz" / "labels.jsonl"  # a file where its folder should be
    assert main(["classify", str(files["cif"]), "-o", str(blocked), "-q"]) == 2  # before anything is classified
    assert capsys.readouterr().err.startswith(f"crystalface: cannot write {blocked}: ")
    new_folder = files["cif"].parent / "results" / "labels.jsonl"  # a missing folder is made, as map does
    assert main(["classify", str(files["cif"]), "-o", str(new_folder), "-q"]) == 0 and new_folder.is_file()
    capsys.readouterr()
    for command in (["classify", str(files["cif"])], ["map", str(files["cif"])], ["experiment", "amorphous"],
                    ["benchmark", "robustness"]):
        with pytest.raises(SystemExit) as exc:  # before anything is read or printed
            main([*command, "--workers", "0"])
        assert exc.value.code == 2
        out, err = capsys.readouterr()
        assert out == "" and "argument --workers: must be at least 1, got 0" in err


def test_fingerprint_writes_a_picture(files, tmp_path, capsys):
    out = tmp_path / "fp.png"
    npy = tmp_path / "fp.npy"
    assert main(["fingerprint", str(files["xyz"]), "--index", "2", "-o", str(out), "--npy", str(npy)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import numpy as np

    assert np.load(npy).shape == (3, 64, 64)
    assert main(["fingerprint", str(files["molecule"]), "-o", str(out)]) == 1
    assert "lattice vectors" in capsys.readouterr().err


def test_dataset_and_train_commands(tmp_path, capsys):
    db = tmp_path / "d.db"
    assert main(["dataset", "--size", "14", "--seed", "2", "-o", str(db)]) == 0
    assert main(["dataset", "--size", "14", "-o", str(db)]) == 2  # refuses to overwrite
    model = tmp_path / "m.safetensors"
    assert main(["train", "--dataset", str(db), "-o", str(model), "--max-epochs", "1", "--workers", "1"]) == 0
    assert model.is_file() and model.with_suffix(".json").is_file()
    assert main(["train", "--dataset", str(tmp_path / "none.db")]) == 2


def test_train_refuses_what_is_not_a_data_set_in_one_line(files, tmp_path, capsys):
    from ase.build import bulk
    from ase.db import connect

    plain = tmp_path / "plain.db"  # an ASE database, but not one of crystalface dataset
    connect(plain).write(bulk("Cu"))
    for path, reason in ((files["xyz"], "file is not a database"), (plain, "row 1 has no class label")):
        assert main(["train", "--dataset", str(path), "-o", str(tmp_path / "m.safetensors")]) == 2
        err = capsys.readouterr().err
        assert err == f"crystalface: {path} is not a data set made by crystalface dataset: {reason}\n"
    assert not (tmp_path / "m.safetensors").exists()


def test_demo_classifies_every_real_crystal(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "24 of 24 right" in out


def test_help_and_import_do_not_load_pytorch():
    # `crystalface --help` and usage errors took ~2 s, all of it importing PyTorch
    import subprocess
    import sys

    code = "import sys, crystalface; from crystalface.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_public_name_is_what_it_says_once_every_module_is_imported():
    # a submodule import binds its name on the package: `crystalface.cluster` must stay the function
    import importlib
    import pkgutil
    import types

    import crystalface

    for module in pkgutil.iter_modules(crystalface.__path__, "crystalface."):
        importlib.import_module(module.name)
    for name in crystalface.__all__:
        assert not isinstance(getattr(crystalface, name), types.ModuleType), name
    assert callable(crystalface.load_model) and issubclass(crystalface.ModelError, Exception)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        crystalface.nothing  # noqa: B018
