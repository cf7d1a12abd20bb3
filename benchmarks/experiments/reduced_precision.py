"""How fast crystalface would run with reduced precision, and what that would change (issue 5).

    python benchmarks/experiments/reduced_precision.py --n 2000 --output benchmarks/experiments/reduced_precision

An experiment, not a path crystalface ships. Issue 5 asks for >= 2x moyopy and >= 50x spglib at
0.1 Å on the noisy supercells of benchmarks/throughput.py; the shipped float32 pipeline reaches
~1.7x and ~40x there. The two reduced-precision levers this machine offers are measured here end to
end, on the same file, in the same rounds, against the same finders:

* "int8 network": ONNX Runtime's static int8 quantization (QDQ, per channel) of the shipped network,
  calibrated on 160 fingerprints of training structures (seed 0), as benchmarks/inference.py makes it;
* "bf16 fingerprint": the fingerprint's matrix products with float32 inputs rounded to bfloat16 by
  oneDNN, accumulated in float32 (``torch.backends.mkldnn.matmul.fp32_precision = "bf16"``: AMX or
  AVX-512 BF16 units; on a CPU without them it is no faster);
* both.

Structures: the n supercells of benchmarks/throughput.py (seed 4000), every one made defective (10 %
vacancies, 0.02 Å), as its defective half. Each mode runs ``crystalface.batch.classify_files`` on all
cores in a fresh process (its start-up not counted), and its records are compared with those of
float32: labels, confident flags, scores, novelties, probabilities. Writes <output>.json and <output>.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/: the throughput benchmark's structures, the int8 recipe

#: mode -> (int8 network, bf16 fingerprint products)
MODES = {"float32 (shipped)": (False, False), "int8 network": (True, False),
         "bf16 fingerprint": (False, True), "int8 network + bf16 fingerprint": (True, True)}

#: Put before throughput's end-to-end script: the int8 graph (``sys.argv[4]``, "" for none) kept
#: for the shipped weights in place of the float32 one (the workers receive it with the model), and
#: the bfloat16 products switched on (``sys.argv[5]`` "1"; inherited by the forked workers).
_PRELUDE = """
import sys
import torch
from crystalface import load_model, runtime
if sys.argv[4]:
    runtime._keep(runtime.digest(load_model().network), open(sys.argv[4], "rb").read())
if sys.argv[5] == "1":
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"
"""


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _compare(base: list[dict], other: list[dict]) -> dict:
    """How the records of a mode differ from float32's, structure by structure."""
    def largest(key):
        return max((abs(a[key] - b[key]) for a, b in zip(base, other) if a.get(key) is not None and b.get(key) is not None),
                   default=0.0)

    return {
        "labels_changed": sum(a.get("label") != b.get("label") for a, b in zip(base, other)),
        "confident_changed": sum(a.get("confident") != b.get("confident") for a, b in zip(base, other)),
        "largest_score_change": largest("score"),
        "largest_novelty_change": largest("novelty"),
        "largest_probability_change": max((abs(a["probabilities"][c] - b["probabilities"][c])
                                           for a, b in zip(base, other) if "probabilities" in a and "probabilities" in b
                                           for c in a["probabilities"]), default=0.0),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="structures (default 2000)")
    parser.add_argument("--baseline-n", type=int, default=100, help="structures for each symmetry finder")
    parser.add_argument("--seed", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=2, help="rounds (medians reported)")
    parser.add_argument("--output", default="benchmarks/experiments/reduced_precision")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1

    import moyopy
    import spglib
    from ase.io import write
    from inference import calibration_fingerprints, quantize_int8
    from throughput import _END_TO_END, _defective, _end_to_end, _structures

    from crystalface import load_model, runtime
    from crystalface.evaluation.provenance import command_line, machine_info, report_paths

    model = load_model()
    structures = [a if i % 2 else _defective(a, i) for i, a in enumerate(_structures(args.n, args.seed))]
    finders = {
        "spglib 0.1": lambda a: spglib.get_symmetry_dataset((a.cell[:], a.get_scaled_positions(), a.numbers), symprec=0.1),
        "moyopy 0.1": lambda a: moyopy.MoyoDataset(
            moyopy.Cell(a.cell[:].tolist(), a.get_scaled_positions().tolist(), a.numbers.tolist()), symprec=0.1),
    }
    baseline = structures[:args.baseline_n]
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "noisy.extxyz"
        write(path, structures, format="extxyz")
        graph = tmp / "float32.onnx"
        graph.write_bytes(runtime.graph(model.network, model.descriptor.df2d.n_pixels))
        int8 = quantize_int8(graph, calibration_fingerprints(model, 160, cores), tmp / "int8.onnx")
        for r in range(args.repeats):
            row = {"modes": {}, "finders_s": {}}
            for name, (use_int8, use_bf16) in MODES.items():
                out = tmp / f"{r}-{list(MODES).index(name)}.jsonl"
                run = _end_to_end(path, out, cores, _PRELUDE + _END_TO_END, str(int8) if use_int8 else "",
                                  "1" if use_bf16 else "0")
                row["modes"][name] = {"run_s": run["run_s"], "cpu_s": run["cpu_s_main"] + run["cpu_s_workers"],
                                      "failed": run["failed"], "records": str(out)}
            for name, run in finders.items():
                start = time.perf_counter()
                for a in baseline:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        run(a)
                row["finders_s"][name] = (time.perf_counter() - start) / len(baseline)
            rounds.append(row)
        base = _records(Path(rounds[-1]["modes"]["float32 (shipped)"]["records"]))
        changes = {name: _compare(base, _records(Path(rounds[-1]["modes"][name]["records"]))) for name in MODES}

    n = len(structures)

    def median(values) -> float:
        return float(np.median(list(values)))

    modes = {}
    for name in MODES:
        modes[name] = {
            "structures_per_second": n / median(r["modes"][name]["run_s"] for r in rounds),
            "structures_per_second_by_round": [n / r["modes"][name]["run_s"] for r in rounds],
            "cpu_ms_per_structure": median(1e3 * r["modes"][name]["cpu_s"] / n for r in rounds),
            "failed": rounds[-1]["modes"][name]["failed"],
            # the finder's time over ours, within each round, median over the rounds
            "ratios": {f: median(r["finders_s"][f] / (r["modes"][name]["run_s"] / n) for r in rounds) for f in finders},
            "compared_with_float32": changes[name],
        }
    results = {
        "command": command_line("benchmarks/experiments/reduced_precision.py", argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "structures": {"n": n, "seed": args.seed, "defective": "all: 10 % vacancies + 0.02 Å",
                       "baseline_n": len(baseline)},
        "repeats": args.repeats,
        "finders_ms": {f: 1e3 * median(r["finders_s"][f] for r in rounds) for f in finders},
        "modes": modes,
        "rounds": [{"finders_s": r["finders_s"],
                    "modes": {k: {x: y for x, y in v.items() if x != "records"} for k, v in r["modes"].items()}}
                   for r in rounds],
    }
    json_path, md_path = report_paths(Path(args.output))
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    finder_ms = results["finders_ms"]
    lines = [
        "# Reduced precision: how fast, and what it changes", "",
        f"`{results['command']}` — {results['date']}, commit `{results['machine']['commit'] or 'unknown'}` "
        f"(crystalface {results['machine']['crystalface']}), {results['machine']['cpus']} CPUs "
        f"({results['machine']['cpu'] or 'CPU model unknown'})", "",
        f"{n} randomly rotated ~256-atom supercells, every one with 10 % vacancies and 0.02 Å displacements "
        f"(benchmarks/throughput.py's, seed {args.seed}); `classify_files` on all {cores} cores, a fresh process per "
        f"run; medians of {args.repeats} rounds. The finders on the first {len(baseline)} of them, one core: "
        + ", ".join(f"{f} {v:.1f} ms" for f, v in finder_ms.items()) + ". Changes: this mode's records against "
        "float32's, over all structures.", "",
        "| mode | structures/s | CPU ms / structure | moyopy 0.1 / ours | spglib 0.1 / ours | labels changed | "
        "confident changed | largest score change | largest novelty change |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {name} | {m['structures_per_second']:.1f} | {m['cpu_ms_per_structure']:.2f} | {m['ratios']['moyopy 0.1']:.2f} | "
          f"{m['ratios']['spglib 0.1']:.1f} | {m['compared_with_float32']['labels_changed']} | "
          f"{m['compared_with_float32']['confident_changed']} | {m['compared_with_float32']['largest_score_change']:.4f} | "
          f"{m['compared_with_float32']['largest_novelty_change']:.4f} |" for name, m in modes.items()], "",
        "Issue 5 asks for 2x moyopy and 50x spglib at 0.1 Å.", "",
    ]
    md_path.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
