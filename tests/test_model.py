"""Tests of crystalface.model: the shipped model, its card, and safe loading."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors import safe_open

from crystalface import DF2D, Descriptor, ModelError, load_model
from crystalface.classes import CLASSES
from crystalface.model import _default_path


def test_the_shipped_model_and_its_card():
    model = load_model()
    card = model.card
    assert model.classes == CLASSES
    assert model.descriptor == Descriptor()
    assert card["validation_accuracy"] == 1.0
    assert card["trained_on"] == "pristine structures only"
    assert card["dataset"]["size"] > 0 and "seed" in card["dataset"]
    assert card["crystalface_version"]
    assert _default_path().stat().st_size < 4 * 2**20, "shipped weights must stay small"


def test_weights_are_safetensors_without_code():
    with safe_open(str(_default_path()), framework="pt") as f:
        assert len(list(f.keys())) > 0


@pytest.fixture
def model_copy(tmp_path):
    src = _default_path()
    dst = tmp_path / "copy.safetensors"
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def test_a_tampered_weights_file_is_refused(model_copy):
    data = bytearray(model_copy.read_bytes())
    data[-10] ^= 0xFF
    model_copy.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256"):
        load_model(model_copy)


def test_a_model_for_other_descriptor_parameters_is_refused(model_copy):
    load_model(model_copy, descriptor=Descriptor())
    with pytest.raises(ModelError, match="trained for descriptor"):
        load_model(model_copy, descriptor=Descriptor(df2d=DF2D(wavelength=1e-11)))


def test_an_edited_card_is_refused(model_copy):
    card_path = model_copy.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["descriptor"]["scaling"] = "mean"
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match="changed after training"):
        load_model(model_copy)


def test_missing_files_and_broken_cards_are_refused(model_copy, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "nothing.safetensors")
    model_copy.with_suffix(".json").write_text("{not json")
    with pytest.raises(ModelError, match="JSON"):
        load_model(model_copy)


def test_save_and_load_round_trip(tmp_path):
    model = load_model()
    path = model.save(tmp_path / "again.safetensors")
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["weights_sha256"] != model.card.get("unused")
    again = load_model(path)
    x = np.random.default_rng(0).random((4, 3, 64, 64), dtype=np.float32)
    assert np.array_equal(model.predict_proba(x), again.predict_proba(x))


def test_prediction_rectifies_in_place_with_the_same_numbers_as_the_gradient_path():
    """ReLUs work in place only when no gradient is recorded; the numbers are the same either way."""
    import torch

    from crystalface.network import ConvNet

    torch.manual_seed(0)
    net = ConvNet().eval()
    x = torch.rand(5, 3, 64, 64)
    before = x.clone()
    with torch.inference_mode():
        fast = net(x)
    slow = net(x)  # gradients on: out of place, as attributions need
    assert slow.requires_grad and torch.equal(fast, slow.detach())
    assert torch.equal(x, before)  # the input itself is never rectified
    assert not any(getattr(m, "inplace", False) for m in net.modules())  # what explain checks


def test_a_card_without_shell_bandwidth_means_the_estimator_before_it(prototypes):
    from crystalface import cluster, displace, scale, standard_cell
    from crystalface.scaling import LEGACY_SHELL_BANDWIDTH, SHELL_BANDWIDTH

    old = Descriptor().to_dict()
    del old["shell_bandwidth"]  # a card written by crystalface < 0.1.9
    assert Descriptor.from_dict(old).shell_bandwidth == LEGACY_SHELL_BANDWIDTH
    assert Descriptor.from_dict(Descriptor().to_dict()) == Descriptor()
    assert Descriptor().shell_bandwidth == SHELL_BANDWIDTH
    ball = displace(cluster(standard_cell(prototypes["hex/rh (hR)"]), n_atoms=256), sigma=0.1, seed=1)  # alpha-As, 0.1 Å
    distances = {}
    for width in (SHELL_BANDWIDTH, LEGACY_SHELL_BANDWIDTH):
        distances[width] = Descriptor(shell_bandwidth=width).scale(ball).info["nn_distance"]
        assert distances[width] == scale(ball, bandwidth=width).info["nn_distance"]
    assert distances[SHELL_BANDWIDTH] != distances[LEGACY_SHELL_BANDWIDTH]
    with pytest.raises(ValueError, match="shell_bandwidth"):
        Descriptor(shell_bandwidth=0.0)


def test_the_novelty_distance_of_a_fingerprint_does_not_depend_on_the_others_in_its_batch():
    """Model._mahalanobis: squared Mahalanobis distance to the nearest class mean, row by row."""
    model = load_model()
    rng = np.random.default_rng(4)
    feats = rng.random((40, model.network.dense)).astype(np.float32) * 3
    full = model._mahalanobis(feats)
    for k in (1, 3, 17):
        assert np.array_equal(model._mahalanobis(feats[:k]), full[:k])
        assert np.array_equal(model._mahalanobis(feats[::-1][:k]), full[::-1][:k])
    means = model.novelty_stats["novelty.means"].double().numpy()
    precision = model.novelty_stats["novelty.precision"].double().numpy()
    diff = feats.astype(np.float64)[:, None, :] - means[None]
    expected = np.array([[d @ precision @ d for d in row] for row in diff]).min(axis=1)
    assert np.allclose(full, expected, rtol=1e-12, atol=0)
