"""Every AFLOW prototype of the shared data through the whole pipeline: real crystals, not our generator's.

    python benchmarks/prototypes.py --output benchmarks/prototypes

The robustness benchmark draws its structures from :mod:`crystalface.dataset`'s generator, which
holds the prototypes the model was trained on. The paper's set was AFLOW's library of real elemental
solids. This benchmark takes the 27 AFLOW prototypes of ``../shared/data/prototypes`` (``--data``),
labels each the way the paper did (:func:`crystalface.dataset.label_structure`: spglib at three
tolerances, SPEC's eight groups into seven classes) and classifies, with the shipped model
(``--model``), through the public API:

* the file as given (a primitive cell), and
* randomly rotated periodic supercells of ~256 atoms: pristine, with 25 % and 50 % vacancies, and
  with Gaussian displacements of 0.04 and 0.1 Å made in the supercell (``--realisations`` each,
  default 10; rotation and defects from ``SeedSequence(seed, spawn_key=(file, variant, realisation))``).

For each prototype: its AFLOW label and space group, its class (None: none of the eight groups),
whether the training generator draws it (``crystalface.dataset.PROTOTYPES``: its AFLOW prototype
with parameters inside the drawn ranges; "label only" when they lie outside), and per variant
the fraction labelled the true class, the fraction confident and the fraction confident *and* wrong.
For a prototype of no class, every confident label is wrong. Writes <output>.json and <output>.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

#: Defects made in the periodic supercell, by variant name: (vacancy fraction, sigma in Å).
DEFECTS = {"pristine": (0.0, 0.0), "25 % vacancies": (0.25, 0.0), "50 % vacancies": (0.5, 0.0),
           "sigma 0.04 A": (0.0, 0.04), "sigma 0.1 A": (0.0, 0.1)}


def read_prototype(path: Path):
    """``(atoms, AFLOW label, AFLOW parameters)`` of an FHI-aims prototype file (its first comment line).

    The line reads ``# A_hR2_166_c params=3.7595,2.78,0.2275 SG#=166 ...`` or
    ``# In/A_tI2_139_a.A params=3.25,1.52 SG=139 ...``; the parameters are a, then c/a (where there is
    one), then the free coordinates.
    """
    from ase.io import read

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="FHI-aims IO is moving", category=FutureWarning)
        atoms = read(path, format="aims")
    line = path.read_text().splitlines()[0]
    label = re.search(r"\b(A_[A-Za-z]+\d+_\d+_[a-z]+)", line)
    params = re.search(r"params=([-\d.,eE]+)", line)
    return atoms, (label.group(1) if label else None), ([float(x) for x in params.group(1).split(",")] if params else [])


def in_generator(aflow: str | None, params: list[float]) -> str:
    """Whether :mod:`crystalface.dataset`'s generator draws this structure: "yes", "label only" (its
    AFLOW prototype, with parameters outside the drawn ranges) or "no"."""
    from crystalface.dataset import PROTOTYPES, _alpha_rh

    for p in PROTOTYPES.values():
        if p.aflow != aflow:
            continue
        values = {}
        if "alpha_rh" in p.ranges and len(params) > 1:
            values["alpha_rh"] = _alpha_rh(params[1])
        if "c_over_a" in p.ranges and len(params) > 1:
            values["c_over_a"] = params[1]
        if "x" in p.ranges and len(params) > 2:
            values["x"] = params[2]
        inside = all(key in values and lo <= values[key] <= hi for key, (lo, hi) in p.ranges.items())
        return "yes" if inside else "label only"
    return "no"


def structures(atoms, file_index: int, seed: int, realisations: int):
    """``(variant, atoms)``: the file as given, then each defect of :data:`DEFECTS` on rotated supercells."""
    from crystalface.defects import displace, vacancies
    from crystalface.examples import random_rotation, supercell_near

    yield "as given", atoms.copy()
    for v, (name, (fraction, sigma)) in enumerate(DEFECTS.items()):
        for r in range(realisations if fraction or sigma else 1):
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(file_index, v, r)))
            out = random_rotation(supercell_near(atoms, 256), rng)
            if fraction:
                out = vacancies(out, fraction, seed=rng)
            if sigma:
                out = displace(out, sigma, seed=rng)
            yield name, out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--model", default=None, help="model file (default: the shipped model)")
    parser.add_argument("--realisations", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--output", default="benchmarks/prototypes")
    args = parser.parse_args(argv)

    from crystalface import classify, load_model
    from crystalface.dataset import label_structure
    from crystalface.evaluation.provenance import command_line, report_paths

    model = load_model(args.model)
    files = sorted((Path(args.data) / "prototypes").glob("*.in"))
    if not files:
        raise SystemExit(f"no prototypes/*.in under {args.data}")
    items = []  # (file, variant, atoms)
    meta = {}
    for i, path in enumerate(files):
        atoms, aflow, params = read_prototype(path)
        group, label = label_structure(atoms)
        meta[path.stem] = {"aflow": aflow, "aflow_params": params,
                           "space_group": int(aflow.split("_")[2]) if aflow else None,
                           "space_group_all_tolerances": group, "class": label, "atoms": len(atoms),
                           "in_generator": in_generator(aflow, params)}
        items += [(path.stem, variant, s) for variant, s in structures(atoms, i, args.seed, args.realisations)]

    start = time.perf_counter()
    predictions = classify([s for _, _, s in items], model=model, workers=args.workers, progress=True)
    seconds = time.perf_counter() - start

    rows = {name: {} for name in meta}
    for (name, variant, _), p in zip(items, predictions):
        rows[name].setdefault(variant, []).append(p)
    prototypes = {}
    for name, variants in rows.items():
        truth = meta[name]["class"]
        out = dict(meta[name], variants={})
        for variant, preds in variants.items():
            right = [p.label == truth for p in preds]
            confident = [bool(p.confident) for p in preds]
            labels, counts = np.unique([str(p.label) for p in preds], return_counts=True)
            out["variants"][variant] = {
                "n": len(preds),
                "right": float(np.mean(right)),
                "confident": float(np.mean(confident)),
                "confident_wrong": float(np.mean([c and not r for c, r in zip(confident, right)])),
                "labels": {str(k): int(v) for k, v in zip(labels, counts)},
                "score_median": float(np.median([p.score or 0.0 for p in preds])),
                "errors": [p.error for p in preds if p.error],
            }
        prototypes[name] = out

    results = {
        "benchmark": "AFLOW prototypes of the shared data, whole pipeline",
        "command": command_line("benchmarks/prototypes.py", argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"file": args.model or "shipped", "weights_sha256": model.card.get("weights_sha256")},
        "seed": args.seed, "realisations": args.realisations,
        "defects": "made in the randomly rotated periodic ~256-atom supercell (crystalface.defects)",
        "seconds": seconds,
        "prototypes": prototypes,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = report_paths(output)
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    md_path.write_text(markdown(results) + "\n")
    print(markdown(results))
    return 0


def markdown(results: dict) -> str:
    variants = ["as given", *DEFECTS]

    def cell(v: dict, truth) -> str:
        if truth is None:  # no class is right: show how often it is (wrongly) confident
            return f"{100 * v['confident']:.0f} % conf."
        text = f"{100 * v['right']:.0f} %"
        if v["confident_wrong"]:
            text += f" ({100 * v['confident_wrong']:.0f} % conf. wrong)"
        return text

    lines = [
        "# AFLOW prototypes through the whole pipeline", "",
        f"`{results['command']}` — {results['date']}, model {results['model']['file']}, seed {results['seed']}, "
        f"{results['realisations']} realisations per defect, {results['seconds']:.0f} s", "",
        "Per prototype of `../shared/data/prototypes`: its class as the paper labels it (spglib at three "
        "tolerances; *none* when its space group is none of SPEC's eight), whether the training generator "
        "draws it (*label only*: its AFLOW prototype, parameters outside the drawn ranges), and the fraction "
        "of the inputs labelled that class (with the fraction "
        "confidently wrong, when there is one). For a crystal of no class, the fraction labelled "
        "confident (every such label is wrong). Defects are made in randomly rotated periodic ~256-atom "
        "supercells.", "",
        "| prototype | AFLOW | class | in the generator | predicted (as given) | " + " | ".join(variants) + " |",
        "|---|---|---|---|---|" + "---:|" * len(variants),
    ]
    rank = {"yes": 0, "label only": 1, "no": 2}
    ordered = sorted(results["prototypes"].items(), key=lambda kv: (kv[1]["class"] is None, rank[kv[1]["in_generator"]], kv[0]))
    for name, p in ordered:
        given = p["variants"]["as given"]
        label = next(iter(given["labels"]))
        lines.append(
            f"| {name.split('_')[0]} | {p['aflow']} | {p['class'] or 'none'} | {p['in_generator']} | "
            f"{label} ({'confident' if given['confident'] else 'not confident'}, {given['score_median']:.2f}) | "
            + " | ".join(cell(p["variants"][v], p["class"]) for v in variants) + " |")
    known = [p for p in results["prototypes"].values() if p["class"] is not None]
    for drawn, title in (("yes", "Prototypes the generator draws"),
                         ("label only", "Prototypes of the generator's AFLOW labels, outside its parameter ranges"),
                         ("no", "Prototypes of the classes the generator lacks")):
        group = [p for p in known if p["in_generator"] == drawn]
        if group:
            n = sum(v["n"] for p in group for v in p["variants"].values())
            right = sum(v["right"] * v["n"] for p in group for v in p["variants"].values())
            wrong = sum(v["confident_wrong"] * v["n"] for p in group for v in p["variants"].values())
            lines.append("")
            lines.append(f"{title}: {len(group)}, {100 * right / n:.1f} % of their {n} inputs right, "
                         f"{100 * wrong / n:.1f} % confidently wrong.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
