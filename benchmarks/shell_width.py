"""How the smoothing width of the "shell" length-scale estimator moves the errors, on the validation seed.

    python benchmarks/shell_width.py --output benchmarks/shell_width

The "shell" estimator (crystalface.scaling) smooths the histogram of pair distances by a Gaussian of
``shell_bandwidth`` nearest-neighbour distances before it takes the first peak. This script runs one
model (default: the shipped one) with every width of ``--widths`` on the same defective structures:
``--per-class`` pristine structures per class of ``generate_structures(seed=5000)`` (the training set
is seed 0, the robustness benchmark's test set seed 1000), their clusters, and the defects of the
robustness benchmark (:func:`crystalface.evaluation.robustness.defect`, seed 5000) at the levels that
decide it. Only the width changes between columns: the weights, the clusters and the defects are the
same. For each width and level it reports the errors, and for each width how many clusters got a
length scale more than 3 % away from the one of their pristine cluster at the same width.
Writes ``<output>.json`` and ``<output>.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

# the levels of model selection (σ in Å, vacancies in %, combined PERCENT:SIGMA), after pristine; the
# scripts of benchmarks/ run with their folder on sys.path
from model_selection import COMBINED, SIGMAS, VACANCIES

WIDTHS = (0.04, 0.03, 0.025, 0.02, 0.015, 0.01)
SEED = 5000


def _cluster(args):
    descriptor, atoms = args
    try:
        return descriptor.cluster(atoms)
    except ValueError:  # StructureError is a ValueError
        return None


def _scales(args):
    """Nearest-neighbour distance of one defective cluster at every width, and the defective cluster."""
    from crystalface.evaluation.robustness import defect
    from crystalface.scaling import nearest_neighbour_distance

    index, cluster, level, widths = args
    damaged = defect(cluster, level, SEED, index)
    return index, damaged, [nearest_neighbour_distance(damaged, "shell", w) for w in widths]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model .safetensors (default: the shipped one)")
    parser.add_argument("--widths", type=float, nargs="+", default=list(WIDTHS))
    parser.add_argument("--sigmas", nargs="*", default=list(SIGMAS), help="Gaussian σ in Å")
    parser.add_argument("--vacancies", nargs="*", default=list(VACANCIES), help="vacancy levels in %%")
    parser.add_argument("--combined", nargs="*", default=list(COMBINED), help="PERCENT:SIGMA pairs")
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", default="benchmarks/shell_width")
    args = parser.parse_args(argv)

    from ase import Atoms
    from tqdm.auto import tqdm

    from crystalface import fingerprint, load_model
    from crystalface.classes import CLASSES
    from crystalface.dataset import generate_structures
    from crystalface.evaluation.provenance import command_line, machine_info, report_paths
    from crystalface.evaluation.robustness import parse_levels

    levels = parse_levels(args.sigmas, args.vacancies, args.combined)  # pristine first
    start = time.perf_counter()
    model = load_model(args.model)
    descriptor = model.descriptor
    drawn = list(generate_structures(len(CLASSES) * args.per_class, seed=SEED, progress=True))
    labels = [info["label"] for _, info in drawn]
    # spawned, not forked: the parent has already started torch's threads
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        clusters = list(tqdm(pool.map(_cluster, [(descriptor, a) for a, _ in drawn], chunksize=32),
                             total=len(drawn), desc="clusters"))
        rows = {}
        for level in levels:
            items = [(i, c, level, args.widths) for i, c in enumerate(clusters) if c is not None]
            done = list(tqdm(pool.map(_scales, items, chunksize=32), total=len(items), desc=level.label))
            if level.kind == "pristine":
                pristine_scale = {i: s for i, _, s in done}
            # one fingerprint per distinct scale of a cluster: most clusters get the same scale at every width
            distinct = sorted({(j, float(s[k])) for j, (_, _, s) in enumerate(done) for k in range(len(args.widths))})
            images = fingerprint([Atoms(numbers=done[j][1].numbers, positions=done[j][1].positions / d) for j, d in distinct],
                                 descriptor.df2d)
            label_of = dict(zip(distinct, np.array(model.classes)[model.predict_proba(images).argmax(1)]))
            errors, moved = [], []
            for k in range(len(args.widths)):
                errors.append(sum(label_of[(j, float(s[k]))] != labels[i] for j, (i, _, s) in enumerate(done)))
                moved.append(sum(abs(s[k] / pristine_scale[i][k] - 1) > 0.03 for i, _, s in done))
            rows[level.key] = {"n": len(done), "errors": dict(zip(map(str, args.widths), errors)),
                               "scale_moved_over_3_percent": dict(zip(map(str, args.widths), map(int, moved)))}
            print(level.key, rows[level.key], flush=True)

    results = {
        "command": command_line("benchmarks/shell_width.py", argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "model": {"file": str(args.model or "shipped"), "weights_sha256": model.card.get("weights_sha256"),
                  "shell_bandwidth_of_card": descriptor.shell_bandwidth},
        "validation_seed": SEED, "per_class": args.per_class,
        "cluster_failures": sum(c is None for c in clusters),
        "levels": rows, "seconds": round(time.perf_counter() - start, 1),
    }
    out = Path(args.output)
    json_path, md_path = report_paths(out)
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    widths = [str(w) for w in args.widths]
    lines = [
        "# Width of the shell estimator, on the validation seed", "",
        f"`{results['command']}` — {results['date']}, commit `{results['machine'].get('commit')}`", "",
        f"Errors out of {7 * args.per_class} structures per level (validation seed {SEED}; {results['cluster_failures']} "
        "without a cluster), the same weights, clusters and defects in every column; only the smoothing width of "
        "the pair-distance histogram (in nearest-neighbour distances) changes. "
        "In brackets: clusters whose length scale moved more than 3 % from their pristine cluster's at the same width.", "",
        "| level | " + " | ".join(widths) + " |",
        "|---|" + "---:|" * len(widths),
    ]
    for level in levels:
        row = rows[level.key]
        moved = "" if level.kind == "pristine" else " ({})"
        cells = [f"{row['errors'][w]}" + moved.format(row["scale_moved_over_3_percent"][w]) for w in widths]
        lines.append(f"| {level.label} | " + " | ".join(cells) + " |")
    lines += ["", f"Total {results['seconds']:.0f} s on {args.workers} processes."]
    md_path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
