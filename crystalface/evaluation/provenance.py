"""Where a result came from: the machine, library versions and the git commit, for every benchmark JSON."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

__all__ = ["command_line", "cpu_model", "machine_info", "report_paths"]


def command_line(script: str, argv: list[str] | None = None) -> str:
    """The command that ran a benchmark script, to be pasted into a shell: ``python script args``.

    ``argv`` are the arguments given to the script's ``main`` (None: the process's own, ``sys.argv[1:]``).

    >>> command_line("benchmarks/small_cells.py", ["--output", "out dir/small"])
    "python benchmarks/small_cells.py --output 'out dir/small'"
    """
    return shlex.join(["python", script, *(sys.argv[1:] if argv is None else argv)])


def report_paths(output: str | Path) -> tuple[Path, Path]:
    """The ``<output>.json`` and ``<output>.md`` a benchmark script writes: the suffixes are appended,
    so a name with dots in it (a version) is kept whole.

    >>> [str(p) for p in report_paths("benchmarks/throughput_0.1.8")]
    ['benchmarks/throughput_0.1.8.json', 'benchmarks/throughput_0.1.8.md']
    """
    output = Path(output)
    return output.with_name(output.name + ".json"), output.with_name(output.name + ".md")


def cpu_model() -> str | None:
    """The processor's model name (``/proc/cpuinfo`` on Linux, else what the platform module knows), or
    None: the same code ran ~25 % faster on one 2-core machine than on another, so every benchmark
    names its CPU. Read by hand: the standard library has no portable call and one line of a file
    is not worth a dependency (py-cpuinfo)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info() -> dict:
    """Platform, CPUs, Python and library versions (crystalface's own included), the git commit of the
    package checkout (or None) and whether the package's files differ from it (``commit_dirty``:
    then the commit alone does not say which code made the numbers; None without git)."""
    import ase
    import torch

    import crystalface

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
    package = Path(crystalface.__file__).resolve().parent
    commit = dirty = None
    try:
        # the checkout's commit only if the package is one of its files (an installed copy in a
        # virtual environment inside some checkout is not)
        if subprocess.run(["git", "ls-files", "--error-unmatch", "__init__.py"], capture_output=True,
                          timeout=10, cwd=package).returncode == 0:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                    cwd=package).stdout.strip() or None
        if commit:
            dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", str(package)], capture_output=True,
                                        text=True, timeout=10, cwd=package).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit = dirty = None
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "ase": ase.__version__,
        "torch": torch.__version__,
        "spglib": spglib_version,
        "moyopy": moyopy_version,
        "crystalface": crystalface.__version__,
        "commit": commit,
        "commit_dirty": dirty,
    }
