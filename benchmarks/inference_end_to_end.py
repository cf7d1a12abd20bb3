"""How much of a faster network reaches `crystalface classify` end to end (issue 5, item 2)?

    python benchmarks/inference_end_to_end.py --n 2000 --output benchmarks/inference_end_to_end

benchmarks/inference.py times the network alone (one thread, fingerprints in memory). This runs the
whole streaming path of ``crystalface classify -o`` (:func:`crystalface.batch.classify_files`, every
core, a fresh interpreter per run, as benchmarks/throughput.py runs it) on the throughput
benchmark's supercells (its structures, seed 4000: randomly rotated ~256-atom supercells, half with
10 % vacancies and 0.02 Å of noise), with three ways of running the network, in interleaved rounds:
eager PyTorch (the network as trained; what crystalface ran before 0.1.11), ONNX Runtime in float32
(what it runs since, :mod:`crystalface.runtime`) and in int8 (ONNX Runtime's static quantization of
that graph, calibrated on ``--calibration`` pristine fingerprints of the training seed 0, built as
benchmarks/inference.py builds it). The other two paths replace :func:`crystalface.runtime.session`
in the run's process, whose pool workers are forked from it and inherit the replacement. Reports,
per path, the rate and the CPU time per structure of every round and their medians, and how its
records differ from eager PyTorch's: labels and confident flags changed, and the largest change of a
probability, a score and a novelty. Writes <output>.json and <output>.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing
sys.path.insert(0, str(HERE))

PATHS = ("eager PyTorch", "ONNX Runtime, float32 (shipped)", "ONNX Runtime, int8")

#: One run in a fresh interpreter: argv = structures, output, workers, network ("torch", "shipped" or an ONNX file).
_RUN = """
import json, multiprocessing, os, sys, time
structures, output, workers, network = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
from crystalface import load_model
from crystalface.batch import classify_files
if network != "shipped":
    assert multiprocessing.get_start_method() == "fork", "the workers must inherit the replaced session"
    sys.path.insert(0, sys.argv[5])
    from inference_end_to_end import replace_session
    replace_session(None if network == "torch" else network)
model = load_model()
start, before = time.perf_counter(), os.times()
summary = classify_files(structures, output, model=model, workers=workers)
after, seconds = os.times(), time.perf_counter() - start
cpu = sum(getattr(after, k) - getattr(before, k) for k in ("user", "system", "children_user", "children_system"))
print(json.dumps({"seconds": seconds, "cpu_s": cpu, "structures": summary.classified + summary.failed,
                  "failed": summary.failed}))
"""


def replace_session(onnx_file: str | None) -> None:
    """Make :func:`crystalface.runtime.session` give PyTorch the network (None) or a session of
    ``onnx_file`` (one thread, made on first use in each process)."""
    from crystalface import runtime

    sessions: dict = {}

    def session(network, n_pixels):
        if onnx_file is None:
            return None
        if os.getpid() not in sessions:  # a forked worker makes its own
            sessions[os.getpid()] = runtime.open_session(onnx_file)  # one thread, as crystalface's workers open it
        return sessions[os.getpid()]

    runtime.session = session


def _run(structures: Path, output: Path, workers: int, network: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _RUN, str(structures), str(output), str(workers), network, str(HERE)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _differences(records: list[dict], reference: list[dict]) -> dict:
    """How ``records`` differ from ``reference`` (eager PyTorch's), structure by structure."""
    def largest(key):
        return max((abs((a.get(key) or 0.0) - (b.get(key) or 0.0)) for a, b in zip(records, reference)), default=0.0)

    return {
        "labels_changed": sum(a["label"] != b["label"] for a, b in zip(records, reference)),
        "confident_changed": sum(a["confident"] != b["confident"] for a, b in zip(records, reference)),
        "records_identical": sum(a == b for a, b in zip(records, reference)),
        "max_probability_difference": max((abs(a["probabilities"][c] - b["probabilities"][c]) for a, b in
                                           zip(records, reference) if a["probabilities"] for c in a["probabilities"]),
                                          default=0.0),
        "max_score_difference": largest("score"),
        "max_novelty_difference": largest("novelty"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="supercells (default 2000)")
    parser.add_argument("--seed", type=int, default=4000, help="the throughput benchmark's seed")
    parser.add_argument("--calibration", type=int, default=256, help="pristine training-seed fingerprints for int8")
    parser.add_argument("--repeats", type=int, default=3, help="rounds, each running every path once")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--output", default="benchmarks/inference_end_to_end")
    args = parser.parse_args(argv)

    import onnxruntime
    from ase.io import write
    from inference import calibration_fingerprints, export_onnx, quantize_int8
    from throughput import _structures

    from crystalface import load_model
    from crystalface.evaluation.provenance import command_line, machine_info, report_paths

    model = load_model()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        structures = tmp / "structures.extxyz"
        write(structures, _structures(args.n, args.seed), format="extxyz")
        calibration = calibration_fingerprints(model, args.calibration, args.workers)
        fp32 = export_onnx(model, tmp / "network.onnx")
        files = dict(zip(PATHS, ("torch", "shipped", str(quantize_int8(fp32, calibration, tmp / "network.int8.onnx")))))
        rounds = {name: [] for name in PATHS}
        records = {}
        for r in range(args.repeats):
            for name, network in files.items():
                output = tmp / f"labels_{PATHS.index(name)}_{r}.jsonl"
                run = _run(structures, output, args.workers, network)
                rounds[name].append({"structures_per_second": round(run["structures"] / run["seconds"], 1),
                                     "cpu_ms_per_structure": round(1e3 * run["cpu_s"] / run["structures"], 2),
                                     "failed": run["failed"]})
                records.setdefault(name, _records(output))

    reference = records[PATHS[0]]
    results = {}
    for name in PATHS:
        rates = [x["structures_per_second"] for x in rounds[name]]
        cpu = [x["cpu_ms_per_structure"] for x in rounds[name]]
        results[name] = {"structures_per_second": float(np.median(rates)), "cpu_ms_per_structure": float(np.median(cpu)),
                         "rounds": rounds[name], **_differences(records[name], reference)}
    eager = results[PATHS[0]]["structures_per_second"]
    for r in results.values():
        r["speed_vs_eager"] = round(r["structures_per_second"] / eager, 3)
    report = {
        "benchmark": "inference_end_to_end",
        "command": command_line("benchmarks/inference_end_to_end.py", argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine_info(), "onnxruntime": onnxruntime.__version__},
        "structures": {"n": args.n, "seed": args.seed, "what": "benchmarks/throughput.py's supercells"},
        "calibration": f"{args.calibration} pristine structures of generate_structures(seed=0) (the training seed)",
        "workers": args.workers, "repeats": args.repeats,
        "paths": results,
    }
    json_path, md_path = report_paths(Path(args.output))
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    md_path.write_text(markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# The network's way of running, end to end",
        "",
        f"`{report['command']}` — {report['date']}, commit `{m.get('commit')}` (crystalface {m['crystalface']}), "
        f"{m['platform']}, {m['cpus']} CPUs, torch {m['torch']}, onnxruntime {m['onnxruntime']}",
        "",
        f"{report['structures']['n']} of {report['structures']['what']} (seed {report['structures']['seed']}), read from an "
        f"extended-XYZ file by `crystalface.batch.classify_files` on {report['workers']} workers, a fresh interpreter per "
        f"run; {report['repeats']} rounds, each running every path once; medians. Differences are from eager "
        f"PyTorch's records (probabilities as written, to 6 digits). int8 calibrated on {report['calibration']}.",
        "",
        "| network | structures/s | vs eager | CPU ms / structure | rates by round | labels changed | "
        "confident changed | records identical | max Δp | max Δscore | max Δnovelty |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in report["paths"].items():
        by_round = " / ".join(f"{x['structures_per_second']:.1f}" for x in r["rounds"])
        lines.append(f"| {name} | {r['structures_per_second']:.1f} | {r['speed_vs_eager']:.2f}x | "
                     f"{r['cpu_ms_per_structure']:.2f} | {by_round} | {r['labels_changed']} | {r['confident_changed']} | "
                     f"{r['records_identical']} | {r['max_probability_difference']:.2g} | "
                     f"{r['max_score_difference']:.2g} | {r['max_novelty_difference']:.2g} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
