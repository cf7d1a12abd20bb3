"""What the benchmarks of MD cells from cold to molten share (small_cells.py, hot_cells.py): their
options, the hot copies of a cell, and the provenance, writing and first line of the results."""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def parser(doc: str, output: str, lindemann, draws: int) -> argparse.ArgumentParser:
    """Options --lindemann, --draws, --first-seed and --output, described by the first line of ``doc``."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--lindemann", type=float, nargs="+", default=list(lindemann))
    p.add_argument("--draws", type=int, default=draws, help="random draws per cell and L")
    p.add_argument("--first-seed", type=int, default=0,
                   help="draw k uses numpy.random.default_rng(first seed + k) (another first seed: other draws)")
    p.add_argument("--output", default=output)
    return p


def hot_copies(pristine, sigma: float, draws: int, first_seed: int = 0) -> list:
    """``draws`` copies of ``pristine``, every atom displaced by Gaussian noise of ``sigma`` Å per axis;
    copy k from ``numpy.random.default_rng(first_seed + k)``."""
    copies = []
    for k in range(first_seed, first_seed + draws):
        atoms = pristine.copy()
        atoms.positions += np.random.default_rng(k).normal(0.0, sigma, atoms.positions.shape)
        copies.append(atoms)
    return copies


def save(benchmark: str, argv, args, per: str, rows: list, started: float, markdown, **notes) -> dict:
    """The result of a run, written to ``<args.output>.json`` and ``.md`` (``markdown(result)``, also printed).

    Its keys: the benchmark, its command line, date, machine and seeds (the draws of each ``per`` and
    L from ``numpy.random.default_rng(k)``, k = first seed .. first seed + draws - 1), then ``notes``,
    the rows and the seconds since ``started``.
    """
    from crystalface.evaluation.provenance import command_line, machine_info

    out = {
        "benchmark": benchmark,
        "command": command_line(f"benchmarks/{benchmark}.py", argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "seeds": f"numpy.random.default_rng(k), k = {args.first_seed} .. {args.first_seed + args.draws - 1}, per {per} and L",
        **notes,
        "rows": rows,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    text = markdown(out)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.output}.json").write_text(json.dumps(out, indent=1) + "\n")
    Path(f"{args.output}.md").write_text(text)
    print(text)
    return out


def run_line(out: dict, how: str) -> str:
    """The Markdown line that says which command ran, when, at which commit, on what and how long."""
    machine = out["machine"]
    return (f"`{out['command']}` — {out['date']}, commit `{machine.get('commit')}`, {machine.get('platform')}; "
            f"{how}; total {out['total_seconds']} s.")
