"""Small periodic cells (ab-initio MD snapshots of 16-128 atoms) from cold to molten: right, and confident when right?

    python benchmarks/small_cells.py --output benchmarks/small_cells

Structures: supercells of a few conventional cells, as ab-initio MD uses them, of fcc Cu (a = 3.61 Å; 2x2x2 =
32 and 3x3x3 = 108 atoms), bcc Fe (2.87 Å; 2x2x2 = 16, 3x3x3 = 54, 4x4x4 = 128), diamond Si (5.43 Å;
2x2x2 = 64) and hcp Mg (a = 3.21, c = 5.21 Å; 3x3x2 = 36, 4x4x3 = 96), every atom displaced by
Gaussian noise of sigma = L x d_nn per axis (L the Lindemann parameter, d_nn the nearest-neighbour
distance; draw k of a cell and L uses ``numpy.random.default_rng(first seed + k)``, ``--first-seed``
0 by default). Melting is usually placed at L = 0.1-0.2: below, the right label should be
confident; above, no label should be. For each cell
and L: how many draws come out right and confident, right and not confident, wrong and not
confident, and **wrong and confident** (the failure a user cannot see), with the reason of each
not-confident prediction counted (and draws that fail, two atoms drawn within 0.1 Å, apart). One
process, ``crystalface.classify``. Writes <output>.json and <output>.md.

``--cells validation`` takes other crystals instead (:data:`VALIDATION_CELLS`: bcc W and Na, fcc Al,
hcp Ti, diamond Ge, simple cubic Po), on which a change to the treatment of small cells is judged
before it is measured on the cells above, with other draws (``--first-seed 1000``):

    python benchmarks/small_cells.py --cells validation --first-seed 1000 --lindemann 0.02 0.05 0.08 0.1 0.12 0.15 \
        --output benchmarks/small_cells_validation
"""

from __future__ import annotations

import sys
import time
import warnings
from collections import Counter

import _md_cells

#: (name, label, ase.build.bulk arguments, repeats)
CELLS = (
    ("Cu fcc", "fcc", dict(name="Cu", crystalstructure="fcc", a=3.61, cubic=True), ((2, 2, 2), (3, 3, 3))),
    ("Fe bcc", "bcc", dict(name="Fe", crystalstructure="bcc", a=2.87, cubic=True), ((2, 2, 2), (3, 3, 3), (4, 4, 4))),
    ("Si diamond", "diam", dict(name="Si", crystalstructure="diamond", a=5.43, cubic=True), ((2, 2, 2),)),
    ("Mg hcp", "hex/rh", dict(name="Mg", crystalstructure="hcp", a=3.21, c=5.21), ((3, 3, 2), (4, 4, 3))),
)
#: Cells of other crystals, for judging a change before it is measured on CELLS.
VALIDATION_CELLS = (
    ("W bcc", "bcc", dict(name="W", crystalstructure="bcc", a=3.165, cubic=True), ((2, 2, 2), (4, 4, 4))),
    ("Na bcc", "bcc", dict(name="Na", crystalstructure="bcc", a=4.23, cubic=True), ((3, 3, 3),)),
    ("Al fcc", "fcc", dict(name="Al", crystalstructure="fcc", a=4.05, cubic=True), ((2, 2, 2), (3, 3, 3))),
    ("Ti hcp", "hex/rh", dict(name="Ti", crystalstructure="hcp", a=2.95, c=4.68), ((3, 3, 2),)),
    ("Ge diamond", "diam", dict(name="Ge", crystalstructure="diamond", a=5.66, cubic=True), ((2, 2, 2),)),
    ("Po sc", "sc", dict(name="Po", crystalstructure="sc", a=3.35), ((3, 3, 3), (4, 4, 4))),
)
LINDEMANN = (0.02, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.3)
DRAWS = 10


#: The kinds of reasons of crystalface.confidence, by how a reason begins.
REASONS = (("no lattice finer", "no lattice finer than the cell"), ("the lattice found has", "basis"),
           ("the lattice found is cubic", "cubic lattice, non-cubic label"),
           ("the lattice found is", "lattice system not the label's"), ("novelty", "novelty above 2"),
           ("weak Bragg", "weak Bragg peaks"), ("the network hesitates", "hesitates"))


def _kind(reason: str) -> str:
    return next((kind for start, kind in REASONS if reason.startswith(start)), reason.split(":")[0])


def main(argv=None) -> int:
    options = _md_cells.parser(__doc__, "benchmarks/small_cells", LINDEMANN, DRAWS)
    options.add_argument("--cells", choices=("test", "validation"), default="test",
                         help="the cells of CELLS (Cu, Fe, Si, Mg) or of VALIDATION_CELLS (W, Na, Al, Ti, Ge, Po)")
    args = options.parse_args(argv)
    cells = CELLS if args.cells == "test" else VALIDATION_CELLS

    import torch
    from ase.build import bulk
    from tqdm.auto import tqdm

    from crystalface import classify, load_model
    from crystalface.scaling import nearest_neighbour_distance

    warnings.simplefilter("ignore")  # classify() warns about failures; they are counted

    torch.set_num_threads(1)
    model = load_model()
    start = time.perf_counter()
    rows = []
    cases = [(c, r, L) for c in cells for r in c[3] for L in args.lindemann]
    for (name, label, build, _), repeat, lindemann in tqdm(cases, desc="small cells", unit="case"):
        pristine = bulk(**build).repeat(repeat)
        d_nn = nearest_neighbour_distance(pristine.repeat(3), "median")
        sigma = lindemann * d_nn
        counts = Counter()
        labels = Counter()
        reasons = Counter()
        for atoms in _md_cells.hot_copies(pristine, sigma, args.draws, args.first_seed):
            p = classify([atoms], model=model)[0]  # a list: a failure comes back as an error, not raised
            if p.error:  # two atoms drawn onto the same spot
                counts["failed"] += 1
                reasons["failed: " + p.error.split(" (")[0]] += 1
                continue
            right = p.label == label
            counts[("right" if right else "wrong") + ("_confident" if p.confident else "_not_confident")] += 1
            labels[p.label] += 1
            if not p.confident:
                reasons[_kind(p.reason)] += 1
        rows.append({"crystal": name, "label": label, "repeat": list(repeat), "atoms": len(pristine),
                     "lindemann": lindemann, "sigma_angstrom": round(sigma, 4), "draws": args.draws,
                     **{key: counts[key] for key in ("right_confident", "right_not_confident", "wrong_not_confident",
                                                     "wrong_confident", "failed")},
                     "labels": dict(labels.most_common()), "reasons_not_confident": dict(reasons.most_common())})
    _md_cells.save("small_cells", argv, args, "cell", rows, start, _markdown)
    return 0


def _markdown(out: dict) -> str:
    lines = [
        "# Small periodic cells from cold to molten: right, and confident when right?",
        "",
        _md_cells.run_line(out, "one process"),
        "",
        "Supercells of a few conventional cells (ab-initio MD sizes), every atom displaced by Gaussian noise of "
        "σ = L x d_nn per axis (L the Lindemann parameter; melting is usually placed at L = 0.1-0.2), "
        f"{out['rows'][0]['draws']} draws each ({out['seeds']}). Columns: draws right and confident, right and "
        "not, wrong and not, **wrong and confident** (the failure the flag exists to prevent).",
        "",
        "| cell | atoms | L | σ (Å) | right, confident | right, not | wrong, not | **wrong, confident** | failed | labels | reasons (not confident, failed) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in out["rows"]:
        size = "x".join(map(str, r["repeat"]))
        labels = ", ".join(f"{k} {v}" for k, v in r["labels"].items())
        reasons = "; ".join(f"{k} ({v})" for k, v in r["reasons_not_confident"].items())
        lines.append(f"| {r['crystal']} {size} | {r['atoms']} | {r['lindemann']:g} | {r['sigma_angstrom']:.3f} | "
                     f"{r['right_confident']} | {r['right_not_confident']} | {r['wrong_not_confident']} | "
                     f"**{r['wrong_confident']}** | {r['failed']} | {labels} | {reasons} |")
    total = {key: sum(r[key] for r in out["rows"]) for key in ("right_confident", "right_not_confident",
                                                                "wrong_not_confident", "wrong_confident")}
    cold = [r for r in out["rows"] if r["lindemann"] < 0.1]
    hot = [r for r in out["rows"] if r["lindemann"] >= 0.15]
    lines += [
        "",
        f"All: right and confident {total['right_confident']}, right and not {total['right_not_confident']}, "
        f"wrong and not {total['wrong_not_confident']}, wrong and confident **{total['wrong_confident']}**. "
        f"Below L = 0.1: {sum(r['right_confident'] for r in cold)} of {sum(r['draws'] for r in cold)} right and "
        f"confident. From L = 0.15: {sum(r['right_confident'] + r['wrong_confident'] for r in hot)} of "
        f"{sum(r['draws'] for r in hot)} confident ({sum(r['wrong_confident'] for r in hot)} of them wrong).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
