"""Compare trained models on data disjoint from the test set, before any of them meets the test set.

    python benchmarks/model_selection.py crystalface/models/default.safetensors other.safetensors ... \
        --output benchmarks/model_selection

For every model: errors out of ``--per-class`` x 7 structures at the defect levels that decide the
robustness benchmark (validation seed 5000; the training set is seed 0 and the robustness benchmark's
test set seed 1000), with the benchmark's own code (:func:`crystalface.evaluation.robustness.run_robustness`),
and the tolerance to strain: the fraction of strained fcc, bcc and sc lattices (the rhombohedral
angle moved by +-delta degrees from 60, 109.47 and 90, 0.02 Å of noise, 10 realisations per sign)
still given their cubic class. A strained fcc lattice is an hR1 lattice, which the training labels
call hex/rh: a model that draws the hex/rh border close to fcc gets boundary structures of the test
generator right and strained real crystals wrong (docs/method.md, "Why this model").
Writes ``<output>.json`` and ``<output>.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

SIGMAS = ("0.08", "0.1", "0.15", "0.2")
VACANCIES = ("50", "60", "70", "80")
COMBINED = ("20:0.04", "30:0.08")
DELTAS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
CENTRES = {"fcc": 60.0, "bcc": 109.4712206, "sc": 90.0}


def strain_tolerance(model, seed: int, realisations: int = 10) -> dict:
    """Fraction of rhombohedrally strained cubic lattices given their cubic class, per class and +-delta."""
    from crystalface import displace, fingerprint
    from crystalface.evaluation.transitions import rhombohedral_lattice

    rng = np.random.default_rng(seed)
    out = {}
    for cls, centre in CENTRES.items():
        for delta in DELTAS:
            clusters = []
            for sign in (-1, 1):
                cluster = model.descriptor.cluster(rhombohedral_lattice(centre + sign * delta))
                for _ in range(realisations):
                    clusters.append(model.descriptor.scale(displace(cluster, 0.02, seed=int(rng.integers(1 << 30)))))
            proba, _ = model.predict(fingerprint(clusters, model.descriptor.df2d))
            out[f"{cls} +-{delta:g}"] = float(np.mean(np.array(model.classes)[proba.argmax(1)] == cls))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model .safetensors files")
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", default="benchmarks/model_selection")
    args = parser.parse_args(argv)

    from crystalface import load_model
    from crystalface.evaluation.provenance import command_line, report_paths
    from crystalface.evaluation.robustness import parse_levels, run_robustness

    levels = parse_levels(list(SIGMAS), list(VACANCIES), list(COMBINED), pristine=False)
    rows = []
    for path in args.models:
        start = time.perf_counter()
        model = load_model(path)
        result = run_robustness(levels, per_class=args.per_class, baseline_per_class=0, seed=args.seed,
                                methods=["crystalface"], model=model, output=None, workers=args.workers, progress=False)
        errors = {lv["key"]: lv["methods"]["crystalface"]["n"] - lv["methods"]["crystalface"]["correct"]
                  for lv in result["levels"]}
        training = model.card.get("training", {})
        rows.append({
            "model": path, "weights_sha256": model.card.get("weights_sha256"),
            "training_seed": training.get("seed"), "best_epoch": training.get("best_epoch"),
            "augmentation": model.card.get("augmentation"),
            "errors": errors, "n_per_level": 7 * args.per_class,
            "strain_fraction_cubic": strain_tolerance(model, args.seed),
            "seconds": round(time.perf_counter() - start, 1),
        })
        print(json.dumps(rows[-1]), flush=True)
    results = {
        "command": command_line("benchmarks/model_selection.py", argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "validation_seed": args.seed, "per_class": args.per_class, "models": rows,
    }
    out = Path(args.output)
    json_path, md_path = report_paths(out)
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    keys = list(rows[0]["errors"])
    strain_keys = [k for k in rows[0]["strain_fraction_cubic"] if k.split()[0] == "fcc"]
    lines = [
        "# Model selection on the validation seed", "",
        f"`{results['command']}` — {results['date']}", "",
        f"Errors out of {7 * args.per_class} structures per level (validation seed {args.seed}; the test set of "
        "the robustness benchmark is seed 1000, the training set seed 0), and the fraction of strained fcc "
        "lattices (rhombohedral angle 60 +- delta degrees, 0.02 Å noise) still called fcc.", "",
        "| model | seed | best epoch | jitter | " + " | ".join(keys) + " | " + " | ".join(strain_keys) + " |",
        "|---|---:|---:|---:|" + "---:|" * (len(keys) + len(strain_keys)),
    ]
    for row in rows:
        jitter = (row["augmentation"] or {}).get("scale_jitter", 0)
        lines.append(f"| `{Path(row['model']).name}` | {row['training_seed']} | {row['best_epoch']} | {jitter:g} | "
                     + " | ".join(str(row["errors"][k]) for k in keys) + " | "
                     + " | ".join(f"{row['strain_fraction_cubic'][k]:.2f}" for k in strain_keys) + " |")
    md_path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
