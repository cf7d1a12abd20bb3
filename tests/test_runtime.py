"""Tests of crystalface.runtime: the network on ONNX Runtime gives PyTorch's answers, never from stale weights."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch

from crystalface import load_model, runtime
from crystalface.network import ConvNet
from crystalface.model import Model


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    x = rng.random((40, 3, 64, 64)).astype(np.float32)
    x[:, :, :8] = 0  # fingerprints are zero in places (the masked detector)
    return x


def _torch_outputs(model: Model, images: np.ndarray) -> np.ndarray:
    return model._batched(runtime.Outputs(model.network), images, 16, len(model.classes) + model.network.dense)


def test_onnx_runtime_gives_pytorchs_probabilities_and_activations(images):
    model = load_model()
    ours = model._outputs(images, 16)
    assert runtime.session(model.network, 64) is not None  # ONNX Runtime did run it
    reference = _torch_outputs(model, images)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() < 1e-4
    assert np.array_equal(ours[:, :7].argmax(1), reference[:, :7].argmax(1))
    proba, novelty = model.predict(images)
    assert np.array_equal(proba, model.predict_proba(images)) and np.array_equal(novelty, model.novelty(images))


def test_outputs_do_not_depend_on_the_batch(images):
    model = load_model()
    by_16 = model._outputs(images, 16)
    for size in (1, 3, 40):
        assert np.array_equal(model._outputs(images, size), by_16)
    mixed = images.copy()
    mixed[8:16] = images[30:38]  # other fingerprints beside the first eight
    assert np.array_equal(model._outputs(mixed, 16)[:8], by_16[:8])


def test_changed_weights_are_exported_again_never_run_stale(images):
    torch.manual_seed(0)
    model = Model(network=ConvNet(n_classes=3).eval(), card={"classes": ["a", "b", "c"]})
    before = model.predict_proba(images[:4])
    with torch.no_grad():
        model.network.classifier[-1].bias += torch.tensor([5.0, 0.0, 0.0])
    after = model.predict_proba(images[:4])
    assert np.abs(after - _torch_outputs(model, images[:4])[:, :3]).max() < 1e-4
    assert np.all(after[:, 0] > before[:, 0])


def test_a_pickled_model_carries_its_graph(images, monkeypatch):
    model = load_model()
    _forget(monkeypatch)  # as in the main process of a new run
    model._ready()
    graph = runtime.exported(model.network)
    assert graph is not None
    assert runtime._SESSIONS == {}  # the process that hands out the model opens no session of its own
    state = pickle.dumps(model)
    _forget(monkeypatch)  # as in a fresh worker process
    copy = pickle.loads(state)
    assert runtime.exported(copy.network) == graph  # received, not exported again
    assert np.array_equal(copy.predict_proba(images[:4]), model.predict_proba(images[:4]))


def test_without_onnx_runtime_pytorch_runs_the_network_after_one_warning(images, monkeypatch):
    model = load_model()
    _forget(monkeypatch)
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # import fails
    with pytest.warns(RuntimeWarning, match="PyTorch runs it"):
        proba = model.predict_proba(images[:4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        assert np.array_equal(model.predict_proba(images[:4]), proba)
    assert np.array_equal(proba, _torch_outputs(model, images[:4])[:, :7])


def test_readying_without_onnx_runtime_warns_once_and_sends_no_graph(images, monkeypatch):
    model = load_model()
    _forget(monkeypatch)
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    with pytest.warns(RuntimeWarning, match="PyTorch runs it"):
        model._ready()
    assert runtime.exported(model.network) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        copy = pickle.loads(pickle.dumps(model))
        assert np.array_equal(copy.predict_proba(images[:4]), _torch_outputs(model, images[:4])[:, :7])


def _forget(monkeypatch):
    """As in a new process: nothing exported or opened in memory."""
    monkeypatch.setattr(runtime, "_EXPORTS", runtime.OrderedDict())
    monkeypatch.setattr(runtime, "_SESSIONS", {})
    monkeypatch.setattr(runtime, "_UNAVAILABLE", [])


def _first_run(images, folder, monkeypatch):
    """The shipped model's probabilities of four fingerprints in a new process whose cache folder is
    ``folder``, and the graph file that run left there."""
    model = load_model()
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    _forget(monkeypatch)
    expected = model.predict_proba(images[:4])
    files = list((folder / "crystalface").glob("network-*.onnx"))
    assert len(files) == 1 and files[0].read_bytes() == runtime.exported(model.network)
    _forget(monkeypatch)  # the next run
    return model, expected, files[0]


def test_the_graph_is_kept_in_the_cache_folder_for_later_runs(images, tmp_path, monkeypatch):
    model, expected, _ = _first_run(images, tmp_path, monkeypatch)

    def no_export(*args):
        raise AssertionError("exported again although the cache holds the graph")

    monkeypatch.setattr(runtime, "_export", no_export)
    assert np.array_equal(model.predict_proba(images[:4]), expected)


def test_a_damaged_cache_file_is_exported_again(images, tmp_path, monkeypatch):
    model, expected, cached = _first_run(images, tmp_path, monkeypatch)
    cached.write_bytes(b"not a graph")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to PyTorch: exported again
        assert np.array_equal(model.predict_proba(images[:4]), expected)
    assert cached.read_bytes() == runtime.exported(model.network)


def test_an_unwritable_cache_folder_only_costs_the_export(images, tmp_path, monkeypatch):
    model = load_model()
    blocked = tmp_path / "a file"
    blocked.write_text("where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    _forget(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        proba = model.predict_proba(images[:4])
    assert np.abs(proba - _torch_outputs(model, images[:4])[:, :7]).max() < 1e-4
