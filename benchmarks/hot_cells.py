"""Hot ~250-atom MD cells: what a frame costs, step by step, from cold to melting.

    python benchmarks/hot_cells.py --output benchmarks/hot_cells

The throughput benchmark's structures are mildly defective (0.02 Å of noise); an MD run at a high
temperature is not. Structures: supercells of fcc Cu (a = 3.61 Å, 4x4x4 = 256 atoms), bcc Fe
(2.87 Å, 5x5x5 = 250), diamond Si (5.43 Å, 3x3x3 = 216) and hcp Mg (a = 3.21, c = 5.21 Å, 5x5x5 =
250), every atom displaced by Gaussian noise of sigma = L x d_nn per axis (L the Lindemann
parameter, d_nn the nearest-neighbour distance; draw k uses ``numpy.random.default_rng(first seed +
k)``, ``--first-seed`` 0 by default). Per crystal and L, one process and one thread: the median
time per structure of the standard cell (SPEC step 2, which finds the lattice from the atoms), the
mean of the whole of ``crystalface.classify`` (read excepted; the draws in one call), how often the
second, wider lattice search ran (``crystalface.cell._find_lattice``: a hot or sparse structure),
and how many draws are labelled right / confidently. Writes <output>.json and <output>.md.
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np

import _md_cells

#: (name, label, ase.build.bulk arguments, repeat)
CELLS = (
    ("Cu fcc", "fcc", dict(name="Cu", crystalstructure="fcc", a=3.61, cubic=True), (4, 4, 4)),
    ("Fe bcc", "bcc", dict(name="Fe", crystalstructure="bcc", a=2.87, cubic=True), (5, 5, 5)),
    ("Si diamond", "diam", dict(name="Si", crystalstructure="diamond", a=5.43, cubic=True), (3, 3, 3)),
    ("Mg hcp", "hex/rh", dict(name="Mg", crystalstructure="hcp", a=3.21, c=5.21), (5, 5, 5)),
)
LINDEMANN = (0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12)
DRAWS = 10


def main(argv=None) -> int:
    args = _md_cells.parser(__doc__, "benchmarks/hot_cells", LINDEMANN, DRAWS).parse_args(argv)

    import torch
    from ase.build import bulk
    from tqdm.auto import tqdm

    from crystalface import cell as cell_module
    from crystalface import classify, load_model
    from crystalface.cell import standard_cell
    from crystalface.scaling import nearest_neighbour_distance

    warnings.simplefilter("ignore")  # classify() warns about failures; they are counted
    torch.set_num_threads(1)
    model = load_model()
    classify([bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)], model=model)  # one-time costs: imports, first calls

    # how many lattice searches a structure needed: _search is called once, or twice when the
    # first search found too little (crystalface.cell._find_lattice)
    searches = []
    search = cell_module._search

    def counted(*a, **k):
        searches.append(1)
        return search(*a, **k)

    start = time.perf_counter()
    rows = []
    cases = [(c, L) for c in CELLS for L in args.lindemann]
    for (name, label, build, repeat), lindemann in tqdm(cases, desc="hot cells", unit="case"):
        pristine = bulk(**build).repeat(repeat)
        d_nn = nearest_neighbour_distance(pristine.repeat(2), "median")
        frames = _md_cells.hot_copies(pristine, lindemann * d_nn, args.draws, args.first_seed)
        cell_times, second = [], 0
        cell_module._search = counted
        try:
            for atoms in frames:
                searches.clear()
                t = time.perf_counter()
                standard_cell(atoms)
                cell_times.append(time.perf_counter() - t)
                second += len(searches) > 1
        finally:
            cell_module._search = search
        t = time.perf_counter()
        predictions = classify(frames, model=model)  # one call, as a batch job runs them
        classify_time = (time.perf_counter() - t) / len(frames)
        ok = [p for p in predictions if not p.error]
        rows.append({
            "crystal": name, "label": label, "atoms": len(pristine), "lindemann": lindemann,
            "sigma_angstrom": round(lindemann * d_nn, 4), "draws": args.draws,
            "standard_cell_ms": round(1e3 * float(np.median(cell_times)), 2),
            "classify_ms": round(1e3 * classify_time, 2),
            "second_search": second,
            "right": sum(p.label == label for p in ok), "confident": sum(bool(p.confident) for p in ok),
            "right_confident": sum(p.label == label and bool(p.confident) for p in ok),
            "failed": len(predictions) - len(ok),
        })
    _md_cells.save("hot_cells", argv, args, "crystal", rows, start, _markdown,
                   timing="one process, one thread; standard cell: median over the draws; classify: "
                          "crystalface.classify(draws) in one call (standard cell, cluster, scale, fingerprint, "
                          "network, confidence), divided by the number of draws")
    return 0


def _markdown(out: dict) -> str:
    lines = [
        "# Hot MD cells: cost per frame from cold to melting", "",
        _md_cells.run_line(out, "one process, one thread"), "",
        "~250-atom supercells, every atom displaced by Gaussian noise of σ = L x d_nn per axis, "
        f"{out['rows'][0]['draws']} draws per crystal and L ({out['seeds']}). Times: {out['timing']}. "
        "*Second search*: draws for which the first lattice search found too little and the wider one ran.", "",
        "| crystal | atoms | L | σ (Å) | standard cell (ms) | classify (ms) | second search | right "
        "| right and confident |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in out["rows"]:
        lines.append(f"| {r['crystal']} | {r['atoms']} | {r['lindemann']:g} | {r['sigma_angstrom']:g} | "
                     f"{r['standard_cell_ms']:.1f} | {r['classify_ms']:.1f} | {r['second_search']}/{r['draws']} | "
                     f"{r['right']}/{r['draws']} | {r['right_confident']}/{r['draws']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
