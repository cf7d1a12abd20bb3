"""Which way of running the network is fastest on this CPU, and does it change any answer (issue 5, item 2)?

    python benchmarks/inference.py --output benchmarks/inference

The network as trained, in eager PyTorch (``inference_mode``, channels-last, in-place ReLUs,
batches of 16, one thread per process; what :meth:`crystalface.model.Model.predict` ran before
0.1.11) against the alternatives the issue names: channels-first eager, TorchScript frozen for
inference, ``torch.compile`` (inductor), ONNX Runtime in float32 (what it runs since 0.1.11,
:mod:`crystalface.runtime`), and int8 (ONNX Runtime static quantization and PyTorch FX quantization,
both calibrated on pristine fingerprints of the *training* seed 0). Every path computes what the
pipeline needs from one forward pass: the class probabilities and the penultimate activations (for
the novelty).

Fingerprints: ``generate_structures(7 x --per-class, seed=5000)`` (the validation seed of
docs/method.md; neither the training seed 0 nor the robustness test seed 1000), defects made on
each ~256-atom cluster as the robustness benchmark makes them, at pristine and at the levels that
decide the paper's tables. For every path: time per fingerprint (one thread, batches of 16, median
of ``--repeats`` rounds that each time every path once, interleaved), the largest probability
difference from eager PyTorch, the labels it changes, and its accuracy per level.
Writes <output>.json and <output>.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import torch  # noqa: E402

from crystalface import fingerprint, load_model, runtime  # noqa: E402
from crystalface.evaluation.provenance import command_line, machine_info, report_paths  # noqa: E402
from crystalface.evaluation.robustness import Level, defect  # noqa: E402

#: Defect levels: pristine and the hardest levels of the paper's tables (σ in Å, vacancies as fractions).
LEVELS = (Level(), Level(sigma=0.08), Level(sigma=0.1), Level(sigma=0.2), Level(vacancy=0.5), Level(vacancy=0.7),
          Level(vacancy=0.3, sigma=0.08))
BATCH = 16
#: The network as trained, the reference of every comparison; and the path crystalface runs (since 0.1.11).
EAGER, SHIPPED = "eager, channels-last", "ONNX Runtime, float32 (shipped)"


def _fingerprints_of(args):
    """Worker: fingerprints of the clusters of ``structures`` at every level (defects seeded by index)."""
    descriptor, items, seed = args
    torch.set_num_threads(1)
    out = {level.key: [] for level in LEVELS}
    for i, atoms in items:
        cluster = descriptor.cluster(atoms)
        for level in LEVELS:
            out[level.key].append(descriptor.scale(defect(cluster, level, seed, i)))
    return {k: fingerprint(v, descriptor.df2d) for k, v in out.items()}


def fingerprints(model, n: int, seed: int, workers: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({level key: (n, 3, 64, 64)}, true labels)`` for ``generate_structures(n, seed)``."""
    from crystalface.dataset import generate_structures

    structures, labels = [], []
    for atoms, info in generate_structures(n, seed=seed):
        structures.append(atoms)
        labels.append(info["label"])
    chunks = [list(enumerate(structures))[i : i + 64] for i in range(0, n, 64)]
    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(_fingerprints_of, [(model.descriptor, c, seed) for c in chunks]))
    images = {level.key: np.concatenate([p[level.key] for p in parts]) for level in LEVELS}
    return images, np.array(labels)


class Both(torch.nn.Module):
    """Probabilities and penultimate activations from one forward pass (what Model.predict computes)."""

    def __init__(self, network):
        super().__init__()
        # the network's own modules, as ConvNet.embed and ConvNet.head split them, installed here so
        # that symbolic tracers (FX) see them
        self.features = network.features
        self.embed = torch.nn.Sequential(*network.classifier[:5])
        self.head = torch.nn.Sequential(*network.classifier[5:])

    def forward(self, x):
        h = self.embed(self.features(x))
        return torch.cat([torch.softmax(self.head(h), dim=1), h], dim=1)


def _plain_relus(network) -> torch.nn.Module:
    """A copy of the network with plain nn.ReLU modules (quantization tools match module types exactly)."""
    import copy

    net = copy.deepcopy(network)
    for seq in (net.features, net.classifier):
        for i, layer in enumerate(seq):
            if isinstance(layer, torch.nn.ReLU):
                seq[i] = torch.nn.ReLU()
    return net


def _torch_runner(module, channels_last: bool = True):
    """A function of a float32 batch (numpy) that runs ``module`` on it in inference mode."""
    def run(x):
        t = torch.from_numpy(x)
        if channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return module(t).numpy()
    return run


def export_onnx(model, path: Path) -> Path:
    """The model's network as crystalface runs it (the ONNX graph of :mod:`crystalface.runtime`), written to ``path``."""
    path.write_bytes(runtime.graph(model.network, model.descriptor.df2d.n_pixels))
    return path


def quantize_int8(onnx_path: Path, calibration: np.ndarray, path: Path) -> Path:
    """ONNX Runtime's static int8 quantization (QDQ, per channel) of ``onnx_path``, calibrated on ``calibration`` fingerprints."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": calibration[i : i + BATCH]} for i in range(0, len(calibration), BATCH)])

        def get_next(self):
            return next(self.batches, None)

    pre = path.with_name(path.stem + ".pre.onnx")
    quant_pre_process(str(onnx_path), str(pre))
    quantize_static(str(pre), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return path


def calibration_fingerprints(model, n: int, workers: int) -> np.ndarray:
    """Fingerprints of ``n`` pristine structures of the training seed 0, to calibrate int8 on."""
    from crystalface.dataset import generate_structures
    from crystalface.pipeline import compute_fingerprints

    return compute_fingerprints([a for a, _ in generate_structures(n, seed=0)], model.descriptor, workers=workers)[0]


def paths(model, calibration: np.ndarray, workdir: Path) -> dict:
    """name -> (function of a (16, 3, n, n) float32 array returning (16, classes + 128), seconds to prepare)."""
    network = model.network.eval()
    both = Both(network).eval()
    out = {}

    out[EAGER] = (_torch_runner(both), 0.0)
    out["eager, channels-first"] = (_torch_runner(both, channels_last=False), 0.0)

    example = torch.from_numpy(calibration[:BATCH]).contiguous(memory_format=torch.channels_last)
    start = time.perf_counter()
    with torch.inference_mode():
        scripted = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(both, example)))
        scripted(example)
        scripted(example)
    out["TorchScript, frozen + optimize_for_inference"] = (_torch_runner(scripted), time.perf_counter() - start)

    start = time.perf_counter()
    compiled = torch.compile(both, dynamic=False)
    with torch.inference_mode():
        compiled(example)
    out["torch.compile (inductor)"] = (_torch_runner(compiled), time.perf_counter() - start)

    start = time.perf_counter()
    onnx_path = export_onnx(model, workdir / "network.onnx")
    session = runtime.session(model.network, calibration.shape[-1])
    out[SHIPPED] = (lambda x: runtime.run(session, x), time.perf_counter() - start)

    start = time.perf_counter()
    session8 = runtime.open_session(quantize_int8(onnx_path, calibration, workdir / "network.int8.onnx"))
    out["ONNX Runtime, int8 (static, per channel)"] = (lambda x: session8.run(None, {"x": x})[0],
                                                        time.perf_counter() - start)

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    start = time.perf_counter()
    torch.backends.quantized.engine = "fbgemm"
    plain = Both(_plain_relus(network)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(plain, get_default_qconfig_mapping("fbgemm"), example_inputs=(example,))
        with torch.inference_mode():
            for i in range(0, len(calibration), BATCH):
                prepared(torch.from_numpy(calibration[i : i + BATCH]))
        quantized = convert_fx(prepared)
    out["PyTorch FX int8 (fbgemm, per tensor)"] = (_torch_runner(quantized, channels_last=False), time.perf_counter() - start)
    return out


def _run(fn, images: np.ndarray) -> np.ndarray:
    n = len(images)
    padded = np.zeros((-(-n // BATCH) * BATCH,) + images.shape[1:], np.float32)
    padded[:n] = images
    return np.concatenate([fn(padded[i : i + BATCH]) for i in range(0, len(padded), BATCH)])[:n]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=100, help="validation structures per class (default 100)")
    parser.add_argument("--calibration", type=int, default=256, help="pristine training-seed fingerprints for int8 (default 256)")
    parser.add_argument("--timing-n", type=int, default=1024, help="fingerprints timed per path and round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--output", default="benchmarks/inference")
    args = parser.parse_args(argv)

    model = load_model()
    classes = np.array(model.classes)
    n_classes = len(classes)
    t0 = time.perf_counter()
    images, labels = fingerprints(model, 7 * args.per_class, 5000, args.workers)
    calibration = calibration_fingerprints(model, args.calibration, args.workers)
    print(f"fingerprints: {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        runners = paths(model, calibration, Path(tmp))
        outputs = {name: {key: _run(fn, x) for key, x in images.items()} for name, (fn, _) in runners.items()}
        timing_set = np.concatenate(list(images.values()))[: args.timing_n]
        times = {name: [] for name in runners}
        for _ in range(args.repeats):
            for name, (fn, _) in runners.items():
                start = time.perf_counter()
                _run(fn, timing_set)
                times[name].append(1e3 * (time.perf_counter() - start) / len(timing_set))

    reference = outputs[EAGER]
    results = {}
    for name, out in outputs.items():
        per_level = {}
        for key, y in out.items():
            ref = reference[key]
            per_level[key] = {
                "accuracy": round(float(np.mean(classes[y[:, :n_classes].argmax(1)] == labels)), 5),
                "labels_changed": int(np.sum(y[:, :n_classes].argmax(1) != ref[:, :n_classes].argmax(1))),
                "max_probability_difference": float(np.abs(y[:, :n_classes] - ref[:, :n_classes]).max()),
                "max_feature_difference": float(np.abs(y[:, n_classes:] - ref[:, n_classes:]).max()),
            }
        results[name] = {
            "ms_per_fingerprint": round(float(np.median(times[name])), 3),
            "ms_by_round": [round(t, 3) for t in times[name]],
            "prepare_seconds": round(runners[name][1], 2),
            "levels": per_level,
        }
    eager_ms = results[EAGER]["ms_per_fingerprint"]
    for r in results.values():
        r["speed_vs_eager"] = round(eager_ms / r["ms_per_fingerprint"], 3)

    import onnxruntime

    report = {
        "benchmark": "inference",
        "command": command_line("benchmarks/inference.py", argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine_info(), "onnxruntime": onnxruntime.__version__,
                    "cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "data": {"validation_seed": 5000, "per_class": args.per_class, "levels": [lv.key for lv in LEVELS],
                 "calibration": f"{args.calibration} pristine structures of generate_structures(seed=0) (the training seed)"},
        "threads": 1, "batch": BATCH, "timing_fingerprints": len(timing_set), "repeats": args.repeats,
        "paths": results,
    }
    out = Path(args.output)
    json_path, md_path = report_paths(out)
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    md_path.write_text(markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    levels = report["data"]["levels"]
    lines = [
        "# Network inference paths",
        "",
        f"`{report['command']}` — {report['date']}, {report['machine']['platform']}, "
        f"{report['machine']['cpus']} CPUs ({report['machine']['cpu_capability']}), torch {report['machine']['torch']}, "
        f"onnxruntime {report['machine']['onnxruntime']}",
        "",
        f"One thread, batches of {report['batch']}, {report['timing_fingerprints']} fingerprints per path and round, "
        f"median of {report['repeats']} interleaved rounds. Accuracy on {7 * report['data']['per_class']} validation "
        f"structures (seed {report['data']['validation_seed']}) per level, defects on the cluster; "
        "\"changed\" counts labels that differ from eager PyTorch's over all levels.",
        "",
        "| path | ms / fingerprint | speed vs eager | labels changed | max Δp | " + " | ".join(levels) + " |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(levels),
    ]
    for name, r in report["paths"].items():
        changed = sum(v["labels_changed"] for v in r["levels"].values())
        dp = max(v["max_probability_difference"] for v in r["levels"].values())
        acc = " | ".join(f"{100 * r['levels'][k]['accuracy']:.2f}" for k in levels)
        lines.append(f"| {name} | {r['ms_per_fingerprint']:.2f} | {r['speed_vs_eager']:.2f}x | {changed} | {dp:.2g} | {acc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
