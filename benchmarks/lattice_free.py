"""Lattice-free classification of randomly oriented finite clusters, next to the lattice-based mode (issue 7).

    python benchmarks/lattice_free.py --per-class 100 --output benchmarks/lattice_free

Structures: the robustness benchmark's pristine test structures (``generate_structures(n, seed=1000)``,
disjoint from the training seed 0) cut into their ~256-atom ball clusters in the standard orientation
(``model.descriptor.cluster``), with the robustness benchmark's defects at a subset of its levels
(``crystalface.evaluation.robustness.defect``: the same vacancies and displacements per structure and
level). Two modes on the same defective clusters:

* lattice-based: the cluster as the periodic pipeline makes it (standard orientation from the
  crystal's lattice vectors), scaled, fingerprinted, classified — the robustness benchmark's number;
* lattice-free: the same cluster under a uniformly random rotation, with no lattice vectors, through
  ``crystalface.local.classify_clusters`` (its own lattice, found from the atoms).

Writes <output>.json and <output>.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

#: (vacancy fraction, sigma Å): pristine, three displacement levels, three vacancy levels, one combined.
LEVELS = ((0.0, 0.0), (0.0, 0.02), (0.0, 0.05), (0.0, 0.1), (0.10, 0.0), (0.25, 0.0), (0.50, 0.0), (0.20, 0.04))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=100, help="structures per class (default 100)")
    parser.add_argument("--seed", type=int, default=1000, help="structure seed (default 1000, the robustness benchmark's)")
    parser.add_argument("--output", default="benchmarks/lattice_free")
    args = parser.parse_args(argv)

    from crystalface import fingerprint, load_model
    from crystalface.classes import CLASSES
    from crystalface.dataset import generate_structures
    from crystalface.evaluation.provenance import command_line, machine_info, report_paths
    from crystalface.evaluation.robustness import Level, defect, score
    from crystalface.examples import random_rotation
    from crystalface.local import classify_clusters

    model = load_model()
    descriptor = model.descriptor
    start = time.perf_counter()
    clusters, true = [], []
    for atoms, info in generate_structures(len(CLASSES) * args.per_class, seed=args.seed):
        clusters.append(descriptor.cluster(atoms))
        true.append(info["label"])
    levels = [Level(vacancy=v, sigma=s) for v, s in LEVELS]
    results = []
    timing = {"lattice_based": 0.0, "lattice_free": 0.0}
    for level in levels:
        defective = [defect(c, level, args.seed, i) for i, c in enumerate(clusters)]
        t0 = time.perf_counter()
        images = fingerprint([descriptor.scale(c) for c in defective], descriptor.df2d)
        based = [model.classes[k] for k in model.predict_proba(images).argmax(axis=1)]
        t1 = time.perf_counter()
        # the rotation stream is its own: structure i gets the same rotation at every level
        rotated = [random_rotation(c, seed=np.random.SeedSequence(args.seed, spawn_key=(0x5107, i))) for i, c in enumerate(defective)]
        free = classify_clusters(rotated, model)
        t2 = time.perf_counter()
        timing["lattice_based"] += t1 - t0
        timing["lattice_free"] += t2 - t1
        free_labels = [p.label for p in free]
        row = {
            "level": level.key, "label": level.label, "vacancy": level.vacancy, "sigma": level.sigma,
            "lattice_based": score(true, based),
            "lattice_free": score(true, free_labels),
            "lattice_free_no_lattice": int(sum(p.label is None for p in free)),
            "lattice_free_confident": round(100.0 * float(np.mean([bool(p.confident) for p in free])), 3),
        }
        results.append(row)
        print(f"{level.label:>16}: lattice-based {row['lattice_based']['accuracy']:7.3f} %   lattice-free "
              f"{row['lattice_free']['accuracy']:7.3f} %  (no lattice {row['lattice_free_no_lattice']}, "
              f"confident {row['lattice_free_confident']:.1f} %)", flush=True)
    elapsed = time.perf_counter() - start

    n = len(clusters)
    out = {
        "command": command_line("benchmarks/lattice_free.py", argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "parameters": {"per_class": args.per_class, "seed": args.seed, "n_structures": n,
                       "mean_cluster_atoms": round(float(np.mean([len(c) for c in clusters])), 1),
                       "model": model.card.get("weights_sha256")},
        "seconds": {"total": round(elapsed, 1), **{k: round(v, 1) for k, v in timing.items()},
                    "lattice_free_ms_per_cluster": round(1000 * timing["lattice_free"] / (n * len(levels)), 2)},
        "levels": results,
    }
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = report_paths(path)
    json_path.write_text(json.dumps(out, indent=1) + "\n")
    md_path.write_text(_markdown(out, CLASSES))
    print(f"wrote {json_path} and {md_path} ({elapsed:.0f} s)")
    return 0


def _markdown(out: dict, classes) -> str:
    p = out["parameters"]
    lines = [
        "# Lattice-free classification of randomly oriented clusters",
        "",
        f"`{out['command']}` — {out['date']}, {out['machine']['platform']}, {out['machine']['cpus']} CPUs",
        "",
        f"{p['n_structures']} pristine test structures ({p['per_class']} per class, `generate_structures(seed={p['seed']})`, "
        f"as in the robustness benchmark), each cut into its ~{p['mean_cluster_atoms']:.0f}-atom ball cluster; defects "
        "made on the cluster with the robustness benchmark's streams. **Lattice-based**: the cluster in the "
        "standard orientation of the crystal's lattice vectors (the periodic pipeline). **Lattice-free**: the same "
        "defective cluster under a uniformly random rotation, no lattice vectors, through "
        "`crystalface.local.classify_clusters` (lattice found from the atoms themselves).",
        "",
        "| level | lattice-based (%) | lattice-free (%) | no lattice found | lattice-free confident (%) |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in out["levels"]:
        lines.append(f"| {row['label']} | {row['lattice_based']['accuracy']:.1f} | {row['lattice_free']['accuracy']:.1f} | "
                     f"{row['lattice_free_no_lattice']} | {row['lattice_free_confident']:.1f} |")
    lines += ["", "Lattice-free accuracy per class (%):", "",
              "| level | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for row in out["levels"]:
        per = row["lattice_free"]["per_class"]
        lines.append(f"| {row['label']} | " + " | ".join(f"{per[c]['accuracy']:.0f}" if per[c]["accuracy"] is not None else "-" for c in classes) + " |")
    s = out["seconds"]
    lines += ["", f"Time: {s['total']:.0f} s in total; lattice-free {s['lattice_free_ms_per_cluster']:.1f} ms per cluster "
              "(lattice search, rotation, scaling, fingerprint, network; one process).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
