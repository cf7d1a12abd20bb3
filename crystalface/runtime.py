"""Step 7's engine: the network run by ONNX Runtime (float32), PyTorch where ONNX Runtime cannot run it.

The network is trained, saved and explained in PyTorch; for prediction, its weights are exported to
an ONNX graph (probabilities and penultimate activations from one pass, :class:`Outputs`) and run by
ONNX Runtime on one thread per process. Through the whole of ``crystalface classify`` that is
1.05-1.08x the rate of eager PyTorch on the throughput benchmark's supercells, with the same labels
and confident flags and every probability, score and novelty within 1e-6
(benchmarks/inference_end_to_end.md, benchmarks/throughput.md). Its outputs are also bit-identical whatever the batch size,
the other fingerprints in a batch and the number of threads, where PyTorch's change in the last bits
below batches of 4.

The export takes ~1 s (most of it importing ``onnx``), once per set of weights: the graph is kept by
the digest of the weights (:func:`digest`, so changed weights are exported again, never run stale)
in memory, in a file of the user's cache folder (``$XDG_CACHE_HOME/crystalface``, default
``~/.cache/crystalface``; written where it can be, read back by later runs, exported again if
unreadable) and with a pickled :class:`crystalface.model.Model`, which pool processes and Dask
workers receive; they then only open a session (~5 ms). Where ``onnxruntime`` or ``onnx`` is
missing or the export fails, PyTorch runs the network, after one warning.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import os
import socket
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["Outputs", "digest", "graph", "open_session", "prepare", "session"]

#: ONNX graphs of the last few networks, by the digest of their weights.
_EXPORTS: OrderedDict[str, bytes] = OrderedDict()
_KEPT_EXPORTS = 4
#: Sessions by (weights digest, process id): a session is never used across a fork.
_SESSIONS: dict[tuple[str, int], object] = {}
#: Why ONNX Runtime cannot run networks in this process, once it failed (PyTorch runs them then).
_UNAVAILABLE: list[str] = []
#: Version of what the exported graph computes (:class:`Outputs`), part of a cached graph's file name:
#: raise it whenever Outputs changes, so that no cached graph of the old kind is ever run.
GRAPH_VERSION = 1


class Outputs(nn.Module):
    """Class probabilities and penultimate activations of a :class:`crystalface.network.ConvNet` from one
    pass, side by side: (B, n_classes + dense). The graph that is exported."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.network.embed(x)
        return torch.cat([torch.softmax(self.network.head(h), dim=1), h], dim=1)


def digest(network: nn.Module) -> str:
    """Digest of a network's weights and buffers (BLAKE2b of their bytes, ~1 ms for the paper's network)."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in network.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def exported(network: nn.Module) -> bytes | None:
    """The ONNX graph of ``network`` if this process has it (exported or received), else None."""
    return _EXPORTS.get(digest(network))


def remember(network: nn.Module, graph: bytes) -> None:
    """Keep ``graph`` as the export of ``network`` (a graph received with a pickled model)."""
    _keep(digest(network), graph)


def _keep(key: str, graph: bytes) -> None:
    _EXPORTS[key] = graph
    _EXPORTS.move_to_end(key)
    while len(_EXPORTS) > _KEPT_EXPORTS:
        _EXPORTS.popitem(last=False)


def _cache_file(key: str) -> Path:
    """Where the graph of the weights with digest ``key`` is kept between runs (per :data:`GRAPH_VERSION`,
    and per PyTorch version: its exporter made it)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "crystalface" / f"network-{key}-graph{GRAPH_VERSION}-torch{torch.__version__}.onnx"


def _cached(key: str) -> bytes | None:
    try:
        return _cache_file(key).read_bytes()
    except OSError:
        return None


def _store(key: str, graph: bytes) -> None:
    """Write the graph to the cache folder, whole or not at all (a temporary file renamed); skipped where it cannot."""
    path = _cache_file(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # one partial file per writer, also among the hosts of a cluster sharing a home folder
        partial = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.part")
        partial.write_bytes(graph)
        os.replace(partial, path)
    except OSError:
        pass  # a read-only home: exported again by the next run


def _export(network: nn.Module, n_pixels: int) -> bytes:
    buffer = io.BytesIO()
    example = torch.zeros((1, 3, n_pixels, n_pixels)).contiguous(memory_format=torch.channels_last)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on tracing
        torch.onnx.export(Outputs(network).eval(), (example,), buffer, dynamo=False, input_names=["x"],
                          output_names=["y"], opset_version=17, dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return buffer.getvalue()


def graph(network: nn.Module, n_pixels: int) -> bytes:
    """The ONNX graph of ``network`` on (B, 3, n, n) fingerprints: kept in this process, else read from
    the cache folder, else exported now (and stored there). Raises what the export raises."""
    key = digest(network)
    found = _EXPORTS.get(key) or _cached(key)
    if found is None:
        found = _export(network, n_pixels)
        _store(key, found)
    _keep(key, found)
    return found


def open_session(graph: bytes | str | os.PathLike):
    """An ONNX Runtime session of one thread (one process per core) on ``graph`` (bytes or a file)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = graph if isinstance(graph, bytes) else os.fspath(graph)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _give_up(exc: Exception) -> None:
    """ONNX Runtime cannot run networks in this process: say why, once; PyTorch runs them."""
    reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    _UNAVAILABLE.append(reason)
    warnings.warn(f"crystalface: ONNX Runtime cannot run the network ({reason}); PyTorch runs it, "
                  "~8 % slower, with probabilities that may differ by ~1e-6", RuntimeWarning, stacklevel=4)


def prepare(network: nn.Module, n_pixels: int) -> None:
    """Have the graph of ``network`` in this process without opening a session (a process that only
    hands the network to workers: a pickled :class:`crystalface.model.Model` carries the graph)."""
    if _UNAVAILABLE:
        return
    try:
        if importlib.util.find_spec("onnxruntime") is None:  # a graph nothing can run is not exported
            raise ModuleNotFoundError("No module named 'onnxruntime'")
        graph(network, n_pixels)
    except Exception as exc:  # noqa: BLE001 - not installed, or an export this torch cannot make
        _give_up(exc)


def session(network: nn.Module, n_pixels: int):
    """An ONNX Runtime session (one thread) running ``network`` in evaluation mode on (B, 3, n, n)
    fingerprints, or None where ONNX Runtime cannot run it: then PyTorch must (one warning per process)."""
    if _UNAVAILABLE:
        return None
    key = digest(network)
    found = _SESSIONS.get((key, os.getpid()))
    if found is not None:
        return found
    try:
        importlib.import_module("onnxruntime")  # before any export: without it no graph is worth making

        kept = graph(network, n_pixels)
        try:
            made = open_session(kept)
        except Exception:  # noqa: BLE001 - a damaged graph (cache file or received): exported again
            fresh = _export(network, n_pixels)
            made = open_session(fresh)
            _store(key, fresh)
            _keep(key, fresh)
    except Exception as exc:  # noqa: BLE001 - not installed, or an export this torch cannot make: PyTorch runs it
        _give_up(exc)
        return None
    for stale in [k for k in _SESSIONS if k[0] not in _EXPORTS]:  # sessions of networks no longer kept
        del _SESSIONS[stale]
    _SESSIONS[(key, os.getpid())] = made
    return made


def run(made, images: np.ndarray) -> np.ndarray:
    """The session's outputs (B, n_classes + dense) for fingerprints (B, 3, n, n)."""
    return made.run(None, {"x": np.ascontiguousarray(images, dtype=np.float32)})[0]
