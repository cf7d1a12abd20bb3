"""Attentive response maps: shapes, the deconvolution itself (checked by hand on the first layer), templates, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ase import Atoms
from ase.io import write

from crystalface.classes import CLASSES
from crystalface.cli import main
from crystalface.examples import REAL_CRYSTALS
from crystalface.explain import class_templates, response_maps, save_templates
from crystalface.model import Model
from crystalface.network import ConvNet

CRYSTALS = {c.name: c for c in REAL_CRYSTALS}
FILTERS = (32, 32, 16, 16, 8, 8)




@pytest.fixture(scope="module")
def fcc_maps(model):
    return response_maps(model, CRYSTALS["Cu"].primitive(), top_k=8)  # every filter of the last two layers


def test_maps_have_the_right_shapes_and_are_finite_and_nontrivial(model, fcc_maps):
    maps = fcc_maps
    assert maps.fingerprint.shape == (3, 64, 64)
    assert maps.classes == model.classes and maps.label in model.classes and maps.target == maps.label
    assert abs(float(maps.probabilities.sum()) - 1) < 1e-4
    assert [layer.n_filters for layer in maps.layers] == list(FILTERS)
    assert maps.maps.shape == (6, 3, 64, 64)
    for layer in maps.layers:
        assert layer.map.shape == (3, 64, 64) and layer.filter_maps.shape == (8, 3, 64, 64)
        assert np.all(np.isfinite(layer.map)) and np.abs(layer.map).max() > 0
        assert np.all(layer.activation >= 0)  # rectified maps, summed
        # top filters are the most relevant for the target class, in order
        assert list(layer.top_filters) == list(np.argsort(-layer.relevance, kind="stable")[:8])
    record = json.loads(json.dumps(maps.to_dict()))
    assert record["label"] == maps.label and len(record["layers"]) == 6


def test_first_layer_map_is_the_zeiler_fergus_deconvolution(model, fcc_maps):
    """By hand: filter k's rectified map, all other filters zeroed, through the transposed first convolution."""
    conv = model.network.features[0]
    x = torch.from_numpy(fcc_maps.fingerprint)[None]
    with torch.no_grad():
        a = torch.relu(conv(x))
        for j, k in enumerate(fcc_maps.layers[0].top_filters):
            only_k = torch.zeros_like(a)
            only_k[:, k] = a[:, k]
            expected = F.conv_transpose2d(only_k, conv.weight, padding=1)[0].numpy()
            np.testing.assert_allclose(fcc_maps.layers[0].filter_maps[j], expected, rtol=1e-4, atol=1e-5)


def test_layer_map_is_the_sum_of_its_filters_and_target_only_reranks(model, fcc_maps):
    last = fcc_maps.layers[-1]
    np.testing.assert_allclose(last.filter_maps.sum(axis=0), last.map, rtol=1e-4, atol=1e-4)
    other = next(c for c in model.classes if c != fcc_maps.label)
    retargeted = response_maps(model, fcc_maps.fingerprint, target=other, top_k=8)
    assert retargeted.target == other and retargeted.label == fcc_maps.label
    np.testing.assert_allclose(retargeted.layers[-1].map, last.map, rtol=1e-5, atol=1e-5)
    assert not np.allclose(retargeted.layers[-1].relevance, last.relevance)


def test_bad_inputs_are_refused(model, fcc_maps):
    with pytest.raises(ValueError, match="shape"):
        response_maps(model, np.zeros((3, 32, 32)))
    with pytest.raises(ValueError, match="target"):
        response_maps(model, fcc_maps.fingerprint, target="quasicrystal")
    inplace = Model(network=ConvNet(n_classes=len(CLASSES)).eval(), card=model.card)
    inplace.network.features[1].inplace = True
    with pytest.raises(ValueError, match="in-place"):
        response_maps(inplace, fcc_maps.fingerprint)


def test_class_templates(model, fcc_maps, tmp_path):
    bcc = model.descriptor(CRYSTALS["Fe"].primitive())
    templates = class_templates(model, {"fcc": fcc_maps.fingerprint[None], "bcc": np.stack([bcc, bcc])})
    assert list(templates) == ["fcc", "bcc"]
    for t in templates.values():
        assert t.shape == (3, 64, 64) and np.all(np.isfinite(t)) and 0 < np.abs(t).max() <= 1 + 1e-6
    # one pristine fingerprint: the template is that fingerprint's last-layer map, normalised
    last = fcc_maps.layers[-1].map
    np.testing.assert_allclose(templates["fcc"], last / np.abs(last).max(), rtol=1e-4, atol=1e-5)
    assert save_templates(templates, tmp_path / "templates.png").stat().st_size > 0
    with pytest.raises(ValueError):
        class_templates(model, {"fcc": np.zeros((0, 3, 64, 64))})


def test_cli_writes_png_and_json(model, tmp_path, capsys):
    shipped = "weights_sha256" in model.card
    weights = None if shipped else Model(network=model.network, card=dict(model.card)).save(tmp_path / "model.safetensors")
    structure = tmp_path / "Si.cif"
    write(structure, CRYSTALS["Si"].conventional())
    png, js, npz = tmp_path / "maps.png", tmp_path / "maps.json", tmp_path / "maps.npz"
    args = ["explain", str(structure), "-o", str(png), "--json", str(js), "--npz", str(npz)]
    assert main(args + (["--model", str(weights)] if weights else [])) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads(js.read_text())
    assert record["label"] in CLASSES and [layer["n_filters"] for layer in record["layers"]] == list(FILTERS)
    assert isinstance(record["confident"], bool) and 0 <= record["score"] <= 1 and "reason" in record
    assert np.load(npz)["maps"].shape == (6, 3, 64, 64)
    assert "wrote" in capsys.readouterr().out
    assert main(["explain", str(tmp_path / "missing.cif"), "-o", str(png)] + (["--model", str(weights)] if weights else [])) == 1


def test_cli_says_when_the_label_it_explains_is_not_confident(tmp_path, capsys):
    gas = tmp_path / "gas.extxyz"  # no crystal: the network still names a class, the score says not to trust it
    write(gas, Atoms("Fe100", positions=np.random.default_rng(0).random((100, 3)) * 10, cell=[10, 10, 10], pbc=True))
    assert main(["explain", str(gas), "-o", str(tmp_path / "gas.png")]) == 0
    out = capsys.readouterr().out
    assert ", not confident: " in out and "wrote" in out
