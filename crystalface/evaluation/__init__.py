"""Benchmarks and experiments that reproduce (and extend) the paper's tables and figures.

Each is a command (``crystalface benchmark ...``, ``crystalface experiment ...``) that writes JSON
with every number behind it plus pictures; the committed runs live in the repository's
``benchmarks/`` folder.
"""

from __future__ import annotations

__all__ = ["register_benchmarks", "register_experiments"]


def register_benchmarks(subparsers) -> None:
    """Add the ``crystalface benchmark`` sub-commands."""
    from . import robustness

    robustness.register(subparsers)


def register_experiments(subparsers) -> None:
    """Add the ``crystalface experiment`` sub-commands."""
    from . import transitions

    transitions.register(subparsers)
