"""What the benchmarks of MD cells from cold to molten share (small_cells.py, hot_cells.py): their
options, the hot copies of a cell, the command line and writing the results."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def parser(doc: str, output: str, lindemann, draws: int) -> argparse.ArgumentParser:
    """Options --lindemann, --draws and --output, described by the first line of ``doc``."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--lindemann", type=float, nargs="+", default=list(lindemann))
    p.add_argument("--draws", type=int, default=draws, help="random draws per cell and L (seeds 0 .. draws-1)")
    p.add_argument("--output", default=output)
    return p


def hot_copies(pristine, sigma: float, draws: int) -> list:
    """``draws`` copies of ``pristine``, every atom displaced by Gaussian noise of ``sigma`` Å per axis;
    copy k from ``numpy.random.default_rng(k)``."""
    copies = []
    for k in range(draws):
        atoms = pristine.copy()
        atoms.positions += np.random.default_rng(k).normal(0.0, sigma, atoms.positions.shape)
        copies.append(atoms)
    return copies


def command(argv) -> str:
    """The command line that ran the benchmark: ``argv`` as given to ``main``, or the process's."""
    return "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])


def provenance(benchmark: str, argv, draws: int, per: str) -> dict:
    """The first keys of a result: the benchmark, its command line, date, machine and seeds."""
    from crystalface.evaluation.provenance import machine_info

    return {
        "benchmark": benchmark,
        "command": command(argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "seeds": f"numpy.random.default_rng(k), k = 0 .. {draws - 1}, per {per} and L",
    }


def write(out: dict, output: str, markdown) -> None:
    """``<output>.json`` and ``<output>.md`` (``markdown(out)``, also printed)."""
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{output}.json").write_text(json.dumps(out, indent=1) + "\n")
    Path(f"{output}.md").write_text(markdown(out))
    print(markdown(out))
