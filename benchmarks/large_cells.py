"""Large periodic cells (MD snapshots of 10^3-10^6 atoms): is the crystal's lattice found, what is the label, how long does it take?

    python benchmarks/large_cells.py --output benchmarks/large_cells

Structures: cubic supercells of n x n x n conventional cells (n = 8-48) of fcc Cu (a = 3.61 Å), bcc Fe (2.87 Å)
and diamond Si (5.43 Å), every atom displaced by Gaussian noise of sigma Å per axis (seeds 0, 1, 2 of
``numpy.random.default_rng``; a snapshot of a hot crystal); sigma 0.35 Å on Cu is Lindemann 0.14, a
crystal beyond melting. For each: whether ``primitive_lattice`` finds the primitive lattice (volume
within 1 %), the label, score and reason of ``crystalface.classify`` (one process, one structure at a
time), and the wall time of each. ``--lattice-only`` skips the classification (to measure older
code whose standard cell took minutes where the lattice was missed). Writes <output>.json and <output>.md.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

#: (name, element, structure, cubic lattice constant Å, atoms per conventional cell, per primitive cell, label)
CRYSTALS = (("Cu", "fcc", 3.61, 4, 1, "fcc"), ("Fe", "bcc", 2.87, 2, 1, "bcc"), ("Si", "diamond", 5.43, 8, 2, "diam"))
SIZES = (8, 16, 24, 32, 48)
SIGMAS = (0.05, 0.1, 0.2)
SEEDS = (0, 1, 2)


def _cases(sizes, sigmas, seeds):
    for element, structure, a, conventional, primitive, label in CRYSTALS:
        for n in sizes:
            for sigma in sigmas:
                for seed in seeds:
                    yield element, structure, a, conventional, primitive, label, n, sigma, seed
    for n in sizes:  # beyond melting
        for seed in seeds:
            yield "Cu", "fcc", 3.61, 4, 1, "fcc", n, 0.35, seed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="conventional cells per edge")
    parser.add_argument("--sigmas", type=float, nargs="+", default=list(SIGMAS), help="noise per axis, Å")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--lattice-only", action="store_true", help="only the lattice search, no classification")
    parser.add_argument("--output", default="benchmarks/large_cells")
    args = parser.parse_args(argv)

    import torch
    from ase.build import bulk
    from tqdm.auto import tqdm

    from crystalface import classify, load_model, primitive_lattice
    from crystalface.evaluation.provenance import command_line, machine_info

    torch.set_num_threads(1)
    model = None if args.lattice_only else load_model()
    rows = []
    start = time.perf_counter()
    cases = list(_cases(args.sizes, args.sigmas, args.seeds))
    for element, structure, a, conventional, primitive, label, n, sigma, seed in tqdm(cases, desc="large cells", unit="cell"):
        atoms = bulk(element, structure, a=a, cubic=True).repeat(n)
        atoms.positions += np.random.default_rng(seed).normal(0.0, sigma, atoms.positions.shape)
        t = time.perf_counter()
        volume = abs(np.linalg.det(primitive_lattice(atoms)))
        row = {"crystal": f"{element} {structure}", "cells": n, "atoms": len(atoms), "sigma_angstrom": sigma, "seed": seed,
               "lattice_found": bool(abs(volume / (a**3 * primitive / conventional) - 1) < 0.01),
               "lattice_seconds": round(time.perf_counter() - t, 3)}
        if model is not None:
            t = time.perf_counter()
            p = classify(atoms, model=model)
            row.update({"label": p.label, "right": p.label == label, "score": round(p.score, 3), "confident": p.confident,
                        "reason": p.reason, "classify_seconds": round(time.perf_counter() - t, 3)})
        rows.append(row)
    elapsed = time.perf_counter() - start
    out = {"benchmark": "large_cells", "command": command_line("benchmarks/large_cells.py", argv),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(),
           "seconds": round(elapsed, 1), "rows": rows}
    path = Path(args.output)
    Path(str(path) + ".json").write_text(json.dumps(out, indent=1) + "\n")
    Path(str(path) + ".md").write_text(_markdown(out))
    print(f"wrote {path}.json and {path}.md ({elapsed:.0f} s)")
    return 0


def _markdown(out: dict) -> str:
    rows = out["rows"]
    classified = "label" in rows[0]
    lines = ["# Large periodic cells: lattice, label and time", "",
             f"`{out['command']}` — {out['date']}, commit `{out['machine'].get('commit')}`, "
             f"{out['machine'].get('platform')}; one process, one thread; total {out['seconds']:.0f} s.", "",
             "Cubic supercells of n x n x n conventional cells, every atom displaced by Gaussian noise of σ per axis, "
             "three draws each (seeds 0-2). *Lattice*: draws whose primitive lattice was found. "
             + ("*Right / confident*: draws labelled with the crystal's class / with score >= 0.5. Times: median of the draws." if classified else ""),
             ""]
    header = "| crystal | n | atoms | σ (Å) | lattice | " + ("right | confident | label(s) | s / structure |" if classified else "s (lattice) |")
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["crystal"], r["cells"], r["atoms"], r["sigma_angstrom"]), []).append(r)
    for (crystal, n, atoms, sigma), rs in groups.items():
        found = f"{sum(r['lattice_found'] for r in rs)}/{len(rs)}"
        if classified:
            labels = ", ".join(sorted({r["label"] for r in rs}))
            lines.append(f"| {crystal} | {n} | {atoms} | {sigma:g} | {found} | {sum(r['right'] for r in rs)}/{len(rs)} | "
                         f"{sum(r['confident'] for r in rs)}/{len(rs)} | {labels} | {np.median([r['classify_seconds'] for r in rs]):.2f} |")
        else:
            lines.append(f"| {crystal} | {n} | {atoms} | {sigma:g} | {found} | {np.median([r['lattice_seconds'] for r in rs]):.2f} |")
    reasons = sorted({r["reason"] for r in rows if classified and r.get("reason")})
    if reasons:
        lines += ["", "Reasons given where not confident:", ""] + [f"* {r}" for r in reasons]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
