"""Where a result came from: the machine, library versions and the git commit, for every benchmark JSON."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

__all__ = ["command_line", "machine_info"]


def command_line(script: str, argv: list[str] | None = None) -> str:
    """The command that ran a benchmark script, to be pasted into a shell: ``python script args``.

    ``argv`` are the arguments given to the script's ``main`` (None: the process's own, ``sys.argv[1:]``).

    >>> command_line("benchmarks/small_cells.py", ["--output", "out dir/small"])
    "python benchmarks/small_cells.py --output 'out dir/small'"
    """
    return shlex.join(["python", script, *(sys.argv[1:] if argv is None else argv)])


def machine_info() -> dict:
    """Platform, CPUs, Python and library versions, and the git commit of the package checkout (or None)."""
    import torch

    try:
        import spglib

        spglib_version = spglib.__version__
    except ImportError:
        spglib_version = None
    try:
        import moyopy

        moyopy_version = getattr(moyopy, "__version__", "unknown")
    except ImportError:
        moyopy_version = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "spglib": spglib_version,
        "moyopy": moyopy_version,
        "commit": commit,
    }
