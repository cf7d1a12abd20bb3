"""Peak memory of a streaming run against the number of frames (issue 5: bounded memory).

    python benchmarks/memory.py --frames 10000 100000 --output benchmarks/memory

For each size, an extended-XYZ file of that many small primitive cells (a pool of 70 distinct ones,
``generate_structures(70, seed=4200)`` in their primitive standard cells, repeated in turn) is
classified by ``crystalface classify FILE -o labels.jsonl --workers 2 -q`` in a subprocess, and the
summed resident memory of the whole process tree (main process and pool workers) is sampled every
0.1 s with psutil; the peak is reported with the wall time and rate. Whether memory grows with the
number of frames shows in the trace: the median tree RSS in each tenth of the run (JSON
``rss_by_tenth_mb``, its last minus its second tenth in the table) and a plot, memory.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import psutil


def pool(seed: int):
    from crystalface.cell import standard_cell
    from crystalface.dataset import generate_structures

    return [standard_cell(a) for a, _ in generate_structures(70, seed=seed)]


def write_frames(path: Path, cells, n: int) -> None:
    from ase.io import write

    with open(path, "w") as f:
        for start in range(0, n, 1000):
            write(f, [cells[i % len(cells)] for i in range(start, min(n, start + 1000))], format="extxyz")


def run(path: Path, output: Path, workers: int) -> dict:
    command = [sys.executable, "-m", "crystalface.cli", "classify", str(path), "-o", str(output),
               "--workers", str(workers), "-q"]
    start = time.perf_counter()
    process = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    samples = []  # (seconds since start, RSS of the process tree in bytes)
    while process.poll() is None:
        try:
            tree = [process, *process.children(recursive=True)]
            samples.append((time.perf_counter() - start, sum(p.memory_info().rss for p in tree if p.is_running())))
        except psutil.Error:
            pass
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    peak = max((rss for _, rss in samples), default=0)
    # median RSS in each tenth of the wall time: flat after the start-up tenth when memory is bounded
    # (the peak itself moves by tens of MB from sample to sample with the workers' transient arrays)
    tenths = [float(np.median([rss for t, rss in samples if k * seconds / 10 <= t < (k + 1) * seconds / 10] or [0]))
              for k in range(10)]
    if process.returncode != 0:
        raise RuntimeError(f"classify exited {process.returncode}: {process.stderr.read().decode()[-500:]}")
    lines = sum(1 for _ in open(output))
    return {"seconds": round(seconds, 1), "records": lines, "peak_rss_mb_process_tree": round(peak / 2**20, 1),
            "structures_per_second": round(lines / seconds, 1),
            "rss_by_tenth_mb": [round(r / 2**20, 1) for r in tenths],
            "growth_mb_second_to_last_tenth": round((tenths[-1] - tenths[1]) / 2**20, 1),
            "trace": [(round(t, 1), round(rss / 2**20, 1)) for t, rss in samples[::10]]}


def plot(results: dict, path: Path) -> None:
    """Tree RSS against the fraction of the run, one line per file size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for n, r in results.items():
        t, rss = zip(*r["trace"]) if r["trace"] else ((), ())
        ax.plot([x / r["seconds"] for x in t], rss, label=f"{int(n):,} frames ({r['seconds']:.0f} s)")
    ax.set_xlabel("fraction of the run (wall time)")
    ax.set_ylabel("RSS of all processes (MB)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right")
    ax.set_title("crystalface classify, streaming: memory over the run")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=4200)
    parser.add_argument("--output", default="benchmarks/memory")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    from crystalface.evaluation.provenance import command_line, machine_info

    cells = pool(args.seed)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.frames:
            path = Path(tmp) / f"frames_{n}.extxyz"
            write_frames(path, cells, n)
            results[str(n)] = {"file_mb": round(path.stat().st_size / 2**20, 1),
                               **run(path, Path(tmp) / f"labels_{n}.jsonl", args.workers)}
            path.unlink()
            print(n, results[str(n)], flush=True)
    out = {
        "command": command_line("benchmarks/memory.py", argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "structures": f"{len(cells)} distinct primitive cells (generate_structures seed {args.seed}), repeated",
        "workers": args.workers,
        "results": results,
    }
    target = Path(args.output)
    named = lambda suffix: target.with_name(target.name + suffix)  # noqa: E731 - "memory_0.1.1" keeps its dots
    named(".json").write_text(json.dumps(out, indent=2) + "\n")
    lines = ["# Peak memory of a streaming run", "", f"`{out['command']}` — {out['date']}, commit "
             f"`{out['machine']['commit'] or 'unknown'}` (crystalface {out['machine']['crystalface']}), "
             f"{out['machine']['platform']}, {out['machine']['cpus']} CPUs", "", f"{out['structures']}; `crystalface classify FILE -o labels.jsonl "
             f"--workers {args.workers}`; peak of the summed RSS of the process tree, sampled every 0.1 s.", "",
             "| frames | file (MB) | wall time (s) | structures/s | peak RSS, all processes (MB) | median RSS, last tenth minus second tenth (MB) |",
             "|---:|---:|---:|---:|---:|---:|",
             *[f"| {n} | {r['file_mb']} | {r['seconds']} | {r['structures_per_second']} | {r['peak_rss_mb_process_tree']} "
               f"| {r['growth_mb_second_to_last_tenth']:+} |" for n, r in results.items()],
             "", f"![RSS over the run]({named('.png').name})", ""]
    plot(results, named(".png"))
    named(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
