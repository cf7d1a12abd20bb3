"""Tests of crystalface.mapping and `crystalface map`: sliding-window classification of a two-grain sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from crystalface import load_model
from crystalface.mapping import UNKNOWN, map_structure, window_centres, write_map

#: Edge lengths (Å) of the two-grain box: fcc Cu for x < X / 2, bcc Fe above.
X, Y, Z = 44.0, 22.0, 22.0


def _grain(crystal: Atoms, lo: float, hi: float, seed: int) -> np.ndarray:
    """Positions of a randomly oriented crystal filling lo <= x < hi, 0 <= y < Y, 0 <= z < Z."""
    rotation = Rotation.random(random_state=seed).as_matrix()
    big = crystal.repeat(20)
    positions = (big.positions - big.positions.mean(axis=0)) @ rotation.T + [(lo + hi) / 2, Y / 2, Z / 2]
    inside = np.all((positions >= [lo, 0, 0]) & (positions < [hi, Y, Z]), axis=1)
    return positions[inside]


@pytest.fixture(scope="module")
def two_grains() -> Atoms:
    """~2000 atoms: a randomly oriented fcc grain and a bcc grain side by side, no lattice vectors."""
    fcc = _grain(bulk("Fe", "fcc", a=3.6, cubic=True), 0.0, X / 2, seed=1)
    bcc = _grain(bulk("Fe", "bcc", a=2.87, cubic=True), X / 2, X, seed=2)
    # atoms of the second grain that overlap the first at the interface are dropped
    d, _ = cKDTree(fcc).query(bcc)
    positions = np.concatenate([fcc, bcc[d > 1.8]])
    return Atoms(f"Fe{len(positions)}", positions=positions)


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def result(two_grains, model):
    # 16 Å, the default box: a window holds a full 256-atom cluster (bcc windows of ~150 atoms, as a
    # 12 Å box gives, come out hex/rh with the shipped model: docs/map.md, Limits)
    return map_structure(two_grains, model, box=16.0, stride=5.0, workers=1, progress=False)


def test_window_grid_covers_the_sample():
    positions = np.array([[0.0, 0.0, 0.0], [30.0, 10.0, 5.0]])
    centres = window_centres(positions, box=16.0, stride=2.0)
    # along x: 8 windows 2 Å apart covering [0, 30]; y and z (thinner than the box): one layer
    assert centres.shape == (8, 3)
    assert np.allclose(centres[:, 1:], [5.0, 2.5])
    assert centres[:, 0].min() - 8 <= 0 and centres[:, 0].max() + 8 >= 30


def test_each_grain_interior_gets_its_class(two_grains, result):
    assert 1600 < len(two_grains) < 2300
    x = two_grains.positions[:, 0]
    fcc = x < X / 2 - 5
    bcc = x > X / 2 + 5
    assert np.mean(result.atom_labels[fcc] == "fcc") >= 0.95
    assert np.mean(result.atom_labels[bcc] == "bcc") >= 0.95
    assert np.median(result.atom_confidence[fcc | bcc]) > 0.8
    assert set(result.labels) <= {None, *result.classes}
    assert result.probabilities.shape == (len(result.centres), len(result.classes))


def test_extxyz_round_trip(tmp_path, two_grains, result):
    from ase.io import read

    paths = write_map(two_grains, result, tmp_path / "sample", source="two grains")
    assert [p.name for p in paths] == ["sample.xyz", "sample.json", "sample.png"]
    back = read(paths[0])
    assert back.arrays["crystalface_class"].tolist() == result.atom_labels.tolist()
    assert np.allclose(back.arrays["crystalface_confidence"], result.atom_confidence)
    assert np.allclose(back.positions, two_grains.positions)
    summary = json.loads(paths[1].read_text())
    assert summary["atoms_per_class"] == result.counts()
    assert len(summary["windows"]) == len(result.centres)
    assert summary["parameters"]["box"] == 16.0
    assert paths[2].stat().st_size > 10_000


def test_map_cli(tmp_path, two_grains):
    from ase.io import write

    from crystalface.cli import main

    source = tmp_path / "grains.xyz"
    write(source, two_grains)
    code = main(["map", str(source), "-o", str(tmp_path / "out"), "--box", "12", "--stride", "12", "--workers", "1", "--quiet"])
    assert code == 0
    assert (tmp_path / "out.xyz").is_file() and (tmp_path / "out.json").is_file() and (tmp_path / "out.png").is_file()


def test_map_cli_says_why_when_no_window_is_classified(tmp_path, capsys):
    from ase.io import write

    from crystalface.cli import main

    source = tmp_path / "Cu.extxyz"
    write(source, bulk("Cu", "fcc", a=3.6))  # a periodic primitive cell: one atom, no window
    assert main(["map", str(source), "-o", str(tmp_path / "out"), "--workers", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "no 16 Å window holds 50 atoms (the sample has 1)" in err and "crystalface classify" in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:  # a usage error, before any reading
        main(["map", str(source), "--box", "-3"])
    assert exc.value.code == 2 and "must be a positive length" in capsys.readouterr().err


def test_a_path_or_a_list_is_a_type_error_that_says_what_to_do(two_grains, model):
    from crystalface.local import classify_clusters

    with pytest.raises(TypeError, match="map_structure takes ase.Atoms, not a path .*ase.io.read"):
        map_structure("grains.xyz", model)
    with pytest.raises(TypeError, match="map_structure takes one ase.Atoms, got list"):
        map_structure([two_grains], model)
    with pytest.raises(TypeError, match="classify_clusters takes ase.Atoms; item 1 is of type int"):
        classify_clusters([two_grains, 3], model)


def test_map_rejects_bad_parameters(two_grains, model):
    with pytest.raises(ValueError, match="box and stride"):
        map_structure(two_grains, model, box=0.0)


def test_atoms_without_classified_windows_are_unknown(model):
    gas = Atoms("Fe300", positions=np.random.default_rng(0).uniform(0, 16, size=(300, 3)))
    result = map_structure(gas, model, box=16.0, stride=8.0, workers=1, progress=False)
    assert all(label is None for label in result.labels)
    assert set(result.atom_labels.tolist()) == {UNKNOWN}
    assert np.all(result.atom_confidence == 0)


def test_site_occupancy_is_low_on_the_surface():
    from crystalface.mapping import site_occupancy

    block = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(5)
    lattice = np.asarray(bulk("Cu", "fcc", a=3.6).cell[:])[None]
    occupancy = site_occupancy(block.positions, lattice, np.zeros(len(block), dtype=int))
    centre = np.linalg.norm(block.positions - block.positions.mean(axis=0), axis=1)
    assert occupancy[np.argmin(centre)] == 1.0
    assert occupancy[np.argmax(centre)] <= 0.5  # a corner atom
    assert np.all(site_occupancy(block.positions, lattice, np.full(len(block), -1)) == 0)
