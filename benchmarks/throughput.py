"""Throughput of crystalface against spglib and moyopy on the same ~256-atom supercells (issue 5, item 1).

    python benchmarks/throughput.py --n 2000 --output benchmarks/throughput

Structures: random pristine prototype structures (crystalface.dataset, seed 4000, disjoint from the
training seed 0) as randomly rotated ~256-atom periodic supercells; half pristine, half with 10 %
vacancies and 0.02 Å Gaussian displacements. They are written to one extended-XYZ file, and the
end-to-end time is file on disk -> label. Per-step times come from a single-process pass over the
same structures, chunk by chunk as a worker runs them (crystalface.batch.CHUNK; the vacuum check of
the confidence step right after each standard cell, as the pipeline runs it); the end-to-end rate uses crystalface.batch.classify_files (what
``crystalface classify -o`` runs) with every core, in a fresh Python process like a user's (this
process has warmed up every step, and workers forked from it would inherit that: lazy imports,
caches); its start-up (imports, loading the model) is reported apart from the rate. Everything is measured ``--repeats`` times in
rounds (end to end, steps, symmetry finders, then again) and the medians are reported; the time of
a shared virtual machine drifts by 20 % within minutes. Reports ratios (theirs / ours, each within
one round; on the defective half, ours is crystalface end to end on a file of as many defective
structures, the same supercells each made defective), since absolute times drift. Writes <output>.json and <output>.md.
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
from tqdm.auto import tqdm


def _structures(n: int, seed: int):
    """The benchmark's supercells: every second one defective (:func:`_defective`)."""
    from crystalface.dataset import generate_structures
    from crystalface.examples import random_rotation, supercell_near

    out = []
    for i, (atoms, _) in enumerate(generate_structures(n, seed=seed)):
        cell = random_rotation(supercell_near(atoms, 256), seed=seed + i)
        out.append(_defective(cell, i) if i % 2 else cell)
    return out


def _defective(cell, i: int):
    """Supercell ``i`` of the benchmark with 10 % vacancies and 0.02 Å displacements."""
    from crystalface import displace, vacancies

    return displace(vacancies(cell, 0.10, seed=i), 0.02, seed=i)


def _time(fn, items) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - start


#: The end-to-end run, in a process of its own: argv = structures file, output file, workers.
_END_TO_END = """
import json, os, resource, sys, time
start = time.perf_counter()
from crystalface import load_model
from crystalface.batch import classify_files
model = load_model()
ready = time.perf_counter()
before = os.times()
summary = classify_files(sys.argv[1], sys.argv[2], model=model, workers=int(sys.argv[3]))
after = os.times()
done = time.perf_counter()
print(json.dumps({"startup_s": ready - start, "run_s": done - ready, "failed": summary.failed,
                  "cpu_s_main": (after.user - before.user) + (after.system - before.system),
                  "cpu_s_workers": (after.children_user - before.children_user) + (after.children_system - before.children_system),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_rss_largest_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


#: The Python API on structures already in memory (read before the clock starts): ``classify(list, workers=...)``.
_API = """
import json, sys, time
from ase.io import read
from crystalface import classify, load_model
model = load_model()
frames = read(sys.argv[1], ":")
start = time.perf_counter()
predictions = classify(frames, model=model, workers=int(sys.argv[3]))
print(json.dumps({"run_s": time.perf_counter() - start, "failed": sum(p.error is not None for p in predictions)}))
"""


def _end_to_end(path: Path, output: Path, workers: int, script: str = _END_TO_END, *extra: str) -> dict:
    """Run ``script`` (:data:`_END_TO_END` or :data:`_API`, or one that begins with a prelude of its
    own and reads ``extra`` from ``sys.argv[4:]``) in a fresh interpreter; its JSON report."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", script, str(path), str(output), str(workers), *extra],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


#: Issue 5's targets: key -> (what, target, how to read it off the results).
TARGETS = {
    "fingerprint_kernel": ("production fingerprint kernel / reference (x)", 100.0,
                           lambda r: r["fingerprint_ms"]["ratio"]),
    "end_to_end": ("end to end, structures/s", 250.0, lambda r: r["end_to_end"]["structures_per_second"]),
    "moyopy_0.1_noisy": ("moyopy 0.1 Å time / ours, noisy half (x)", 2.0,
                         lambda r: r["ratios_on_noisy_baseline_time_over_ours_end_to_end"]["moyopy 0.1"]),
    "spglib_0.1_noisy": ("spglib 0.1 Å time / ours, noisy half (x)", 50.0,
                         lambda r: r["ratios_on_noisy_baseline_time_over_ours_end_to_end"]["spglib 0.1"]),
}


def acceptance(results: dict) -> dict:
    """Each of :data:`TARGETS` with the value this run measured and whether it reaches the target."""
    out = {}
    for key, (what, target, read) in TARGETS.items():
        value = float(read(results))
        out[key] = {"what": what, "target": target, "measured": value, "met": value >= target}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="structures (default 2000)")
    parser.add_argument("--reference-n", type=int, default=20, help="structures for the slow reference kernel")
    parser.add_argument("--baseline-n", type=int, default=200, help="structures for each symmetry finder")
    parser.add_argument("--seed", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every measurement (medians reported)")
    parser.add_argument("--output", default="benchmarks/throughput")
    args = parser.parse_args(argv)
    if args.n < 2 or args.baseline_n < 2:
        parser.error("--n and --baseline-n must be at least 2 (every second structure is defective)")
    cores = os.cpu_count() or 1

    import moyopy
    import spglib
    import torch

    from crystalface import fingerprint, fingerprint_reference, load_model, read_structures
    from crystalface.batch import CHUNK
    from crystalface.cell import LatticeFound, standard_cell
    from crystalface.cluster import _cluster
    from crystalface.confidence import assess, vacuum_fraction
    from crystalface.evaluation.provenance import command_line, machine_info, report_paths

    model = load_model()
    descriptor = model.descriptor
    structures = _structures(args.n, args.seed)

    def spg(symprec):
        def run(a):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                spglib.get_symmetry_dataset((a.cell[:], a.get_scaled_positions(), a.numbers), symprec=symprec)
        return run

    def moyo(symprec):
        def run(a):
            try:
                moyopy.MoyoDataset(moyopy.Cell(a.cell[:].tolist(), a.get_scaled_positions().tolist(), a.numbers.tolist()), symprec=symprec)
            except Exception:  # noqa: BLE001 - a failed search still costs its time
                pass
        return run

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "structures.extxyz"
        from ase.io import write

        write(path, structures, format="extxyz")
        # for the comparison on the defective structures: ours end to end on as many of them as the
        # run above has structures (so that start-up and the last chunk weigh as much), every one made
        # defective as the odd ones are (which are the same structures)
        noisy_path = Path(tmp) / "noisy.extxyz"
        write(noisy_path, [a if i % 2 else _defective(a, i) for i, a in enumerate(structures)], format="extxyz")
        n_noisy = args.n

        # per step, one process, one thread: where does the time go? A few structures first through
        # every step, so that one-time costs (lazy imports, first calls into torch) are not counted
        torch.set_num_threads(1)
        warm = [e.atoms for _, e in zip(range(8), read_structures(path))]
        warm_images = fingerprint([descriptor.scale(_cluster(standard_cell(a), descriptor.n_atoms, None))
                                   for a in warm], descriptor.df2d)
        warm_proba, warm_novelty = model.predict(warm_images)
        assess(warm_proba, warm_images, warm, descriptor.df2d, warm_novelty)
        torch.set_num_threads(cores)

        base_n = min(args.baseline_n, len(structures))
        # same number of pristine and defective structures in the subsample (every second is defective)
        subsample = structures[:base_n]
        noisy = subsample[1::2]
        finders = {"spglib 1e-3": spg(1e-3), "spglib 0.1": spg(0.1), "moyopy 1e-3": moyo(1e-3), "moyopy 0.1": moyo(0.1)}

        # rounds: every measurement once per round, so that a slow spell of a shared machine hits all
        # of them; medians over the rounds, and each ratio from the times of its own round
        rounds = []
        for r in tqdm(range(args.repeats), desc="rounds", unit="round"):
            # end to end, file on disk -> label, all cores: the streaming path of `crystalface classify -o`
            process = _end_to_end(path, Path(tmp) / f"labels{r}.jsonl", cores)
            end_to_end = process["run_s"]
            process_noisy = _end_to_end(noisy_path, Path(tmp) / f"noisy{r}.jsonl", cores)
            api = _end_to_end(path, Path(tmp) / "unused", cores, _API)
            torch.set_num_threads(1)
            start = time.perf_counter()
            frames = [e.atoms for e in read_structures(path)]
            steps = {"read": time.perf_counter() - start}
            # the other steps chunk by chunk, as a worker of classify_files runs them (batch.CHUNK); the
            # vacuum check of the confidence step right after each standard cell, as the pipeline
            # measures it (with the standard cell's neighbour tree, cell._neighbours), counted as confidence
            for k in range(0, len(frames), CHUNK):
                chunk = frames[k:k + CHUNK]
                cells, lattices = [], []
                for a in chunk:
                    start = time.perf_counter()
                    cells.append(standard_cell(a))
                    middle = time.perf_counter()
                    lattices.append(LatticeFound(vacuum=vacuum_fraction(a)))
                    steps["standard_cell"] = steps.get("standard_cell", 0.0) + middle - start
                    steps["vacuum"] = steps.get("vacuum", 0.0) + time.perf_counter() - middle
                start = time.perf_counter()
                # as Descriptor.cluster does: standard_cell has checked the structure already
                clusters = [_cluster(c, descriptor.n_atoms, None) for c in cells]
                steps["cluster"] = steps.get("cluster", 0.0) + time.perf_counter() - start
                start = time.perf_counter()
                scaled = [descriptor.scale(c) for c in clusters]
                steps["scale"] = steps.get("scale", 0.0) + time.perf_counter() - start
                start = time.perf_counter()
                images = fingerprint(scaled, descriptor.df2d)
                steps["fingerprint"] = steps.get("fingerprint", 0.0) + time.perf_counter() - start
                if k == 0:
                    # the reference kernel right after the production one, in the same round: their ratio is
                    # then measured in one state of a machine whose speed drifts by 20 % within minutes
                    ref_n = min(args.reference_n, len(scaled))
                    reference_s = _time(lambda c: fingerprint_reference(c, descriptor.df2d), scaled[:ref_n]) / ref_n
                start = time.perf_counter()
                proba, novelty = model.predict(images)
                steps["network"] = steps.get("network", 0.0) + time.perf_counter() - start
                start = time.perf_counter()
                assess(proba, images, chunk, descriptor.df2d, novelty, lattices=lattices)
                steps["confidence"] = steps.get("confidence", 0.0) + time.perf_counter() - start
            steps["confidence"] += steps.pop("vacuum")
            torch.set_num_threads(cores)
            rounds.append({
                "end_to_end_s": end_to_end,
                "end_to_end_process": process,
                # on the file of defective structures (each costs more than a pristine one)
                "end_to_end_noisy_s": process_noisy["run_s"],
                "api_s": api["run_s"],
                "steps_s": steps,
                "fingerprint_reference_s": reference_s,
                "baselines_s": {name: _time(run, subsample) / base_n for name, run in finders.items()},
                "baselines_noisy_s": {name: _time(run, noisy) / len(noisy) for name, run in finders.items()},
            })

    def median(values) -> float:
        return float(np.median(list(values)))

    n = len(structures)
    per_structure = median(r["end_to_end_s"] for r in rounds) / n
    rate = 1.0 / per_structure
    steps = {k: median(r["steps_s"][k] for r in rounds) for k in rounds[0]["steps_s"]}
    production = steps["fingerprint"] / n
    reference = median(r["fingerprint_reference_s"] for r in rounds)
    kernel_ratio = median(r["fingerprint_reference_s"] / (r["steps_s"]["fingerprint"] / n) for r in rounds)

    def ratios(key: str, ours: str, count: int) -> dict:
        """Median over the rounds of (its time / ours end to end), each ratio within one round."""
        return {k: median(r[key][k] / (r[ours] / count) for r in rounds) for k in finders}

    baselines = {k: median(r["baselines_s"][k] for r in rounds) for k in finders}
    baselines_noisy = {k: median(r["baselines_noisy_s"][k] for r in rounds) for k in finders}
    ratio_all = ratios("baselines_s", "end_to_end_s", n)
    ratio_noisy = ratios("baselines_noisy_s", "end_to_end_noisy_s", n_noisy)
    noisy_rate = n_noisy / median(r["end_to_end_noisy_s"] for r in rounds)
    results = {
        "command": command_line("benchmarks/throughput.py", argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "structures": {"n": n, "seed": args.seed, "atoms_mean": float(np.mean([len(a) for a in structures])),
                       "defective": "every second: 10 % vacancies + 0.02 Å"},
        "failures": rounds[-1]["end_to_end_process"]["failed"],
        "repeats": args.repeats,
        "end_to_end": {"structures_per_second": rate, "ms_per_structure": 1e3 * per_structure, "workers": cores,
                       "structures_per_second_by_round": [n / r["end_to_end_s"] for r in rounds],
                       "noisy_half": {"structures": n_noisy, "structures_per_second": noisy_rate}},
        "api": {"structures_per_second": n / median(r["api_s"] for r in rounds), "workers": cores},
        "steps_single_thread_ms_per_structure": {k: 1e3 * v / n for k, v in steps.items()},
        "fingerprint_ms": {"reference": 1e3 * reference, "production_single_thread": 1e3 * production,
                           "ratio": kernel_ratio, "reference_structures": ref_n},
        "baselines_ms": {k: 1e3 * v for k, v in baselines.items()},
        "ratios_baseline_time_over_ours_end_to_end": ratio_all,
        "baselines_noisy_ms": {k: 1e3 * v for k, v in baselines_noisy.items()},
        "ratios_on_noisy_baseline_time_over_ours_end_to_end": ratio_noisy,
        "rounds": rounds,
        "startup_s": median(r["end_to_end_process"]["startup_s"] for r in rounds),
        # CPU time of the main process and of its pool workers over the run, per structure, and the
        # share of all cores' wall time it fills: what is left to gain by keeping the cores busy
        "cpu_ms_per_structure": median(1e3 * (r["end_to_end_process"]["cpu_s_main"] + r["end_to_end_process"]["cpu_s_workers"]) / n
                                       for r in rounds),
        "cores_busy": median((r["end_to_end_process"]["cpu_s_main"] + r["end_to_end_process"]["cpu_s_workers"])
                             / (cores * r["end_to_end_process"]["run_s"]) for r in rounds),
        "peak_rss_mb": max(r["end_to_end_process"]["peak_rss_mb"] for r in rounds),
        "peak_rss_largest_worker_mb": max(r["end_to_end_process"]["peak_rss_largest_worker_mb"] for r in rounds),
    }
    results["acceptance"] = acceptance(results)
    out = Path(args.output)
    json_path, md_path = report_paths(out)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Throughput: file on disk to label", "",
        f"`{results['command']}` — {results['date']}, commit `{results['machine']['commit'] or 'unknown'}` "
        f"(crystalface {results['machine']['crystalface']}), {results['machine']['platform']}, {results['machine']['cpus']} CPUs"
        f" ({results['machine']['cpu'] or 'CPU model unknown'})", "",
        f"{len(structures)} randomly rotated periodic supercells (mean {results['structures']['atoms_mean']:.0f} atoms), "
        "half pristine, half with 10 % vacancies and 0.02 Å displacements.", "",
        f"Every time is the median of {args.repeats} rounds, each round measuring everything once; each ratio "
        "is the median of the ratios within a round.", "",
        f"**End to end: {rate:.1f} structures/s** ({1e3 * per_structure:.1f} ms each, all cores; "
        "`crystalface.batch.classify_files`, the path of `crystalface classify -o`, in a fresh process; "
        f"its start-up before the first structure, imports and model, took {results['startup_s']:.1f} s more). "
        f"Peak RSS {results['peak_rss_mb']:.0f} MB (main process), largest worker "
        f"{results['peak_rss_largest_worker_mb']:.0f} MB. End to end by round: "
        + ", ".join(f"{v:.1f}" for v in results["end_to_end"]["structures_per_second_by_round"]) + " structures/s. "
        f"CPU time of the main process and its workers: {results['cpu_ms_per_structure']:.1f} ms per structure, "
        f"{100 * results['cores_busy']:.0f} % of the {cores} cores' wall time.", "",
        f"Python API, `classify(structures, workers={cores})` on the same structures already in memory (read "
        f"before the clock starts, in a fresh process): {results['api']['structures_per_second']:.1f} structures/s.", "",
        f"| step (one process, one thread, chunks of {CHUNK}) | ms / structure |", "|---|---:|",
        *[f"| {k} | {v:.2f} |" for k, v in results["steps_single_thread_ms_per_structure"].items()], "",
        f"Fingerprint kernel: reference {1e3 * reference:.1f} ms, production {1e3 * production:.2f} ms "
        f"(single thread; the reference on the first {ref_n} structures, in every round right after the "
        f"production kernel; the ratio is the median of the rounds' ratios): {kernel_ratio:.0f}x.", "",
        f"The finders run on one core, crystalface end to end on all {cores} cores: the last column compares "
        f"the same resources (a finder run on {cores} cores in parallel would be {cores}x faster).", "",
        "| symmetry finder (same structures) | ms / structure | its time / ours end to end | per core |", "|---|---:|---:|---:|",
        *[f"| {k} | {1e3 * v:.1f} | {ratio_all[k]:.2f} | {ratio_all[k] / cores:.2f} |" for k, v in baselines.items()], "",
        f"On the defective (noisy) half only: the finders on the {len(noisy)} defective structures of the "
        f"{base_n} above, crystalface end to end (as above) on a file of {n_noisy} defective structures "
        f"(the {n} above, each made defective as every second one is: they include those {len(noisy)}): "
        f"{noisy_rate:.1f} structures/s.", "",
        "| symmetry finder (noisy structures) | ms / structure | its time / ours end to end on the noisy half | per core |",
        "|---|---:|---:|---:|",
        *[f"| {k} | {1e3 * v:.1f} | {ratio_noisy[k]:.2f} | {ratio_noisy[k] / cores:.2f} |" for k, v in baselines_noisy.items()], "",
        "Issue 5's acceptance, from this run:", "",
        "| | target | measured | met |", "|---|---:|---:|---|",
        *[f"| {a['what']} | {a['target']:g} | {a['measured']:.2f} | {'yes' if a['met'] else '**no**'} |"
          for a in results["acceptance"].values()], "",
    ]
    md_path.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
