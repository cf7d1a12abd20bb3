"""Speed of the DF-2D kernels: the reference direct sum against the production kernel.

Both kernels run on the ~256-atom clusters of the seven class prototypes (standard_cell -> cluster ->
scale). The production kernel gets them in one call over ``--copies`` copies of each
(7 x 16 = 112 structures by default; it computes them one at a time, batched over orientations); the
reference kernel computes one of each.
The agreement of the two (max |difference|, Pearson correlation) is measured on the same clusters.

    python benchmarks/fingerprint_speed.py --repeats 3 --output benchmarks/fingerprint_speed

writes ``<output>.json`` (every number, the parameters and the machine) and ``<output>.md`` (a table).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import ase  # noqa: E402
import ase.io  # noqa: E402
import torch  # noqa: E402

from crystalface import DF2D, cluster, fingerprint, fingerprint_reference, scale, standard_cell  # noqa: E402
from crystalface.evaluation.provenance import command_line, machine_info  # noqa: E402

#: One prototype per class (AFLOW prototype library, as in /work/shared/data/prototypes).
PROTOTYPES = {
    "bcc": "bcc_W_A_cI2_229_a.in",
    "bct139": "bctIn_In_A_tI2_139_a.in",
    "bct141": "bctBetaSn_Sn_A_tI4_141_a.in",
    "diam": "diam_C_A_cF8_227_a.in",
    "fcc": "fcc_Cu_A_cF4_225_a.in",
    "hex/rh": "hcp_Mg_A_hP2_194_c.in",
    "sc": "sc_alphaPo_A_cP1_221_a.in",
}


def load_clusters(data: Path, n_atoms: int) -> dict:
    clusters = {}
    for label, name in PROTOTYPES.items():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="FHI-aims IO is moving", category=FutureWarning)
            atoms = ase.io.read(data / name, format="aims")
        clusters[label] = scale(cluster(standard_cell(atoms), n_atoms=n_atoms))
    return clusters


def timed(function, repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls, after one untimed warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def run(args) -> dict:
    params = DF2D()
    clusters = load_clusters(Path(args.data), args.n_atoms)
    structures = [atoms for atoms in clusters.values() for _ in range(args.copies)]

    production_times = timed(lambda: fingerprint(structures, params), args.repeats)
    # the same on one thread, as each worker process of a batch job runs it
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    one_thread_times = timed(lambda: fingerprint(structures, params), args.repeats)
    torch.set_num_threads(threads)
    reference_times = timed(lambda: [fingerprint_reference(atoms, params) for atoms in clusters.values()],
                            args.repeats)

    fast = fingerprint(list(clusters.values()), params)
    agreement = {}
    for image, (label, atoms) in zip(fast, clusters.items()):
        exact = fingerprint_reference(atoms, params)
        agreement[label] = {
            "n_atoms": len(atoms),
            "max_abs_diff": float(np.abs(image - exact).max()),
            "pearson": float(np.corrcoef(image.ravel(), exact.ravel())[0, 1]),
        }

    n_fast, n_ref = len(structures), len(clusters)
    fast_rate = n_fast / min(production_times)
    one_thread_rate = n_fast / min(one_thread_times)
    ref_rate = n_ref / min(reference_times)
    return {
        "benchmark": "fingerprint_speed",
        "command": command_line("benchmarks/fingerprint_speed.py"),
        "working_directory": os.getcwd(),
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine_info(), "torch_threads": torch.get_num_threads()},
        "parameters": {
            "df2d": params.to_dict(),
            "n_atoms_target": args.n_atoms,
            "copies_per_class": args.copies,
            "repeats": args.repeats,
            "timing": "best of the repeats after one warm-up call; structures/s = structures / seconds",
        },
        "production": {
            "structures_per_call": n_fast,
            "seconds": production_times,
            "structures_per_second": fast_rate,
            "ms_per_structure": 1e3 / fast_rate,
        },
        "production_one_thread": {
            "structures_per_call": n_fast,
            "seconds": one_thread_times,
            "structures_per_second": one_thread_rate,
            "ms_per_structure": 1e3 / one_thread_rate,
        },
        "reference": {
            "structures_per_call": n_ref,
            "seconds": reference_times,
            "structures_per_second": ref_rate,
            "ms_per_structure": 1e3 / ref_rate,
        },
        "speedup": fast_rate / ref_rate,
        "speedup_one_thread": one_thread_rate / ref_rate,
        "agreement": agreement,
        "agreement_worst": {
            "max_abs_diff": max(a["max_abs_diff"] for a in agreement.values()),
            "pearson": min(a["pearson"] for a in agreement.values()),
            "acceptance": "max_abs_diff <= 0.02 and pearson >= 0.999",
        },
    }


def markdown(result: dict) -> str:
    m, p, f, r = result["machine"], result["parameters"], result["production"], result["reference"]
    f1 = result["production_one_thread"]
    worst = result["agreement_worst"]
    ok = worst["max_abs_diff"] <= 0.02 and worst["pearson"] >= 0.999
    sizes = ", ".join(f"{label} {a['n_atoms']}" for label, a in result["agreement"].items())
    lines = [
        "# DF-2D kernel speed",
        "",
        f"`{result['command']}` — {result['date_utc']}, commit `{m['commit'] or 'unknown'}`, crystalface {m['crystalface']}",
        "",
        f"Machine: {m['platform']}, {m['processor']}, {m['cpus']} CPUs ({m['usable_cpus']} usable), "
        f"torch {m['torch']} with {m['torch_threads']} threads, numpy {m['numpy']}.",
        "",
        f"Clusters: the 7 class prototypes, standard_cell -> cluster({p['n_atoms_target']}) -> scale "
        f"({sizes} atoms); "
        f"{p['df2d']['n_pixels']}x{p['df2d']['n_pixels']} pixels, 3 channels x 2 rotations. "
        f"Best of {p['repeats']} runs after a warm-up.",
        "",
        "| kernel | structures per call | structures/s | ms/structure |",
        "|---|---:|---:|---:|",
        f"| reference (`fingerprint_reference`, float64 direct sum, one by one) | {r['structures_per_call']} | "
        f"{r['structures_per_second']:.2f} | {r['ms_per_structure']:.1f} |",
        f"| production (`fingerprint`) | {f['structures_per_call']} | "
        f"{f['structures_per_second']:.2f} | {f['ms_per_structure']:.1f} |",
        f"| production on one thread (as in each worker of a batch job) | {f1['structures_per_call']} | "
        f"{f1['structures_per_second']:.2f} | {f1['ms_per_structure']:.1f} |",
        "",
        f"**Speed-up: {result['speedup']:.1f}x** ({m['torch_threads']} threads), "
        f"**{result['speedup_one_thread']:.1f}x on one thread** (the reference's NumPy runs as it is set up "
        "by default; its time is the complex exponential of a pixels x atoms array, which NumPy computes on one thread).",
        "",
        "Agreement of production with reference (acceptance: max |diff| <= 0.02, Pearson >= 0.999): "
        + ("**met**" if ok else "**NOT met**"),
        "",
        "| class | atoms | max abs diff | Pearson |",
        "|---|---:|---:|---:|",
    ]
    for label, a in result["agreement"].items():
        lines.append(f"| {label} | {a['n_atoms']} | {a['max_abs_diff']:.4f} | {a['pearson']:.6f} |")
    lines += ["", f"Worst: max abs diff {worst['max_abs_diff']:.4f}, Pearson {worst['pearson']:.6f}.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per kernel (best is reported)")
    parser.add_argument("--copies", type=int, default=16, help="copies of each class cluster in the production batch")
    parser.add_argument("--n-atoms", type=int, default=256, help="target cluster size")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "prototypes"),
                        help="folder of the AFLOW prototype geometry.in files")
    parser.add_argument("--output", default="benchmarks/fingerprint_speed", help="writes <output>.json and <output>.md")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.copies < 1:
        parser.error("--repeats and --copies must be at least 1")
    if not Path(args.data).is_dir():
        parser.error(f"prototype folder not found: {args.data}")

    result = run(args)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{output}.json").write_text(json.dumps(result, indent=2) + "\n")
    Path(f"{output}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
