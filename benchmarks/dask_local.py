"""The Dask path against the local process pool on one machine: what the cluster machinery costs (issue 5, item 4).

    python benchmarks/dask_local.py --n 1000 4000 --output benchmarks/dask_local

The same randomly rotated ~256-atom supercells as benchmarks/throughput.py (crystalface.dataset,
seed 4000, half pristine, half with 10 % vacancies and 0.02 Å noise), written to one extended-XYZ
file per size. Each run is ``crystalface.batch.classify_files`` in a fresh Python process with
``--workers`` processes: without a scheduler (the local pool, what ``crystalface classify -o`` runs)
and with ``scheduler="local"`` (a Dask LocalCluster of as many single-threaded workers, what
``--scheduler local`` runs: the cluster's start-up, the frame count of the file, the parts and
the cluster's shutdown are all inside the time). The two are run alternately, ``--repeats`` times,
and the medians reported; the records of the two are compared byte for byte. Writes <output>.json
and <output>.md.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from throughput import _structures  # noqa: E402 - the same structures as the throughput benchmark

_RUN = """
import json, sys, time
from crystalface.batch import classify_files
if __name__ == "__main__":
    path, output, workers, scheduler = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    start = time.perf_counter()
    # no model given, as from the command line: the shipped one, loaded here or once per Dask worker
    summary = classify_files([path], output, workers=workers, scheduler=None if scheduler == "none" else scheduler)
    print(json.dumps({"run_s": time.perf_counter() - start, "classified": summary.classified, "failed": summary.failed}))
"""


def _run(path: Path, output: Path, workers: int, scheduler: str) -> dict:
    """One classify_files run in a fresh interpreter (a script file: Dask's workers start by spawning)."""
    script = output.with_suffix(".py")
    script.write_text(_RUN)
    out = subprocess.run([sys.executable, str(script), str(path), str(output), str(workers), scheduler],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 4000], help="structures per run (default 1000 4000)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each path per size (medians reported)")
    parser.add_argument("--seed", type=int, default=4000)
    parser.add_argument("--output", default="benchmarks/dask_local")
    args = parser.parse_args(argv)
    if min(args.n) < 1 or args.workers < 1 or args.repeats < 1:
        parser.error("--n, --workers and --repeats must be positive")

    from ase.io import write

    from crystalface.distributed import PART, _part_size
    from crystalface.evaluation.provenance import report_paths

    sizes = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.n:
            path = Path(tmp) / f"structures{n}.extxyz"
            write(path, _structures(n, args.seed), format="extxyz")
            runs = {"pool": [], "dask": []}
            identical = True
            for r in range(args.repeats):
                for name, scheduler in (("pool", "none"), ("dask", "local")):
                    report = _run(path, Path(tmp) / f"{name}{n}_{r}.jsonl", args.workers, scheduler)
                    assert report["classified"] + report["failed"] == n, report
                    runs[name].append(report["run_s"])
                    print(f"n={n} round {r}: {name} {report['run_s']:.2f} s", flush=True)
                identical &= filecmp.cmp(Path(tmp) / f"pool{n}_{r}.jsonl", Path(tmp) / f"dask{n}_{r}.jsonl", shallow=False)
            pool, dask = float(np.median(runs["pool"])), float(np.median(runs["dask"]))
            sizes.append({"n": n, "part": _part_size(n, PART, args.workers), "pool_s": runs["pool"], "dask_s": runs["dask"],
                          "pool_median_s": pool, "dask_median_s": dask, "pool_per_s": n / pool, "dask_per_s": n / dask,
                          "dask_overhead_s": dask - pool, "records_identical": identical})

    results = {
        "command": "python benchmarks/dask_local.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": platform.platform(), "cpus": os.cpu_count(),
        "workers": args.workers, "repeats": args.repeats, "seed": args.seed, "sizes": sizes,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = report_paths(out)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# The Dask path on one machine", "",
        f"`{results['command']}` — {results['date']}, {results['machine']}, {results['cpus']} CPUs", "",
        f"`classify_files` on one extended-XYZ file of ~280-atom supercells (half with 10 % vacancies and 0.02 Å "
        f"noise), {args.workers} processes, each run in a fresh process (its imports not counted; the model, the "
        f"shipped one, is loaded inside the run, by each Dask worker on the cluster path); "
        f"the local pool against a Dask LocalCluster of {args.workers} single-threaded workers (its start-up and "
        f"shutdown, the frame count and the parts counted). Median of {args.repeats} alternating runs.", "",
        "| structures | part (structures per task) | local pool (s) | Dask local (s) | pool structures/s | Dask structures/s | Dask - pool (s) | records identical |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in sizes:
        lines.append(f"| {s['n']} | {s['part']} | {s['pool_median_s']:.1f} | {s['dask_median_s']:.1f} | {s['pool_per_s']:.0f} | "
                     f"{s['dask_per_s']:.0f} | {s['dask_overhead_s']:.1f} | {'yes' if s['records_identical'] else 'NO'} |")
    md_path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
