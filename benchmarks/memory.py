"""Peak memory of a streaming run against the number of frames (issue 5: bounded memory).

    python benchmarks/memory.py --frames 10000 100000 --output benchmarks/memory

For each size, an extended-XYZ file of that many small primitive cells (a pool of 70 distinct ones,
``generate_structures(70, seed=4200)`` in their primitive standard cells, repeated in turn) is
classified by ``crystalface classify FILE -o labels.jsonl --workers 2 -q`` in a subprocess, and the
summed resident memory of the whole process tree (main process and pool workers) is sampled every
0.1 s with psutil; the peak is reported with the wall time and rate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

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
    peak = 0
    while process.poll() is None:
        try:
            tree = [process, *process.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"classify exited {process.returncode}: {process.stderr.read().decode()[-500:]}")
    lines = sum(1 for _ in open(output))
    return {"seconds": round(seconds, 1), "records": lines, "peak_rss_mb_process_tree": round(peak / 2**20, 1),
            "structures_per_second": round(lines / seconds, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=4200)
    parser.add_argument("--output", default="benchmarks/memory")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
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
        "command": "python benchmarks/memory.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "structures": f"{len(cells)} distinct primitive cells (generate_structures seed {args.seed}), repeated",
        "workers": args.workers,
        "results": results,
    }
    target = Path(args.output)
    target.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    lines = ["# Peak memory of a streaming run", "", f"`{out['command']}` — {out['date']}, {out['machine']['platform']}, "
             f"{out['machine']['cpus']} CPUs", "", f"{out['structures']}; `crystalface classify FILE -o labels.jsonl "
             f"--workers {args.workers}`; peak of the summed RSS of the process tree, sampled every 0.1 s.", "",
             "| frames | file (MB) | wall time (s) | structures/s | peak RSS, all processes (MB) |", "|---:|---:|---:|---:|---:|",
             *[f"| {n} | {r['file_mb']} | {r['seconds']} | {r['structures_per_second']} | {r['peak_rss_mb_process_tree']} |"
               for n, r in results.items()], ""]
    target.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
