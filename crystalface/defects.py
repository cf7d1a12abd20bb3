"""Step 4 of the pipeline: defect makers for evaluation (never used for training)."""

from __future__ import annotations

import numpy as np
from ase import Atoms

from .cell import atoms_only

__all__ = ["vacancies", "displace"]


def vacancies(atoms: Atoms, fraction: float, seed: int | np.random.Generator | None = 0) -> Atoms:
    """Remove a random ``fraction`` of the atoms (vacancies / missing data); returns a new structure.

    Exactly ``round(fraction * len(atoms))`` atoms are removed, chosen uniformly with ``seed``.

    Examples
    --------
    >>> from ase.build import bulk
    >>> len(vacancies(bulk("Cu", "fcc", a=3.6, cubic=True).repeat(4), fraction=0.25, seed=0))
    192
    """
    atoms_only(atoms, "vacancies")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    n_remove = int(round(fraction * len(atoms)))
    if len(atoms) - n_remove < 2:
        raise ValueError(f"removing {n_remove} of {len(atoms)} atoms leaves fewer than two")
    keep = np.sort(rng.permutation(len(atoms))[n_remove:])
    out = atoms[keep]
    return out


def displace(atoms: Atoms, sigma: float, seed: int | np.random.Generator | None = 0) -> Atoms:
    """Displace every atom by Gaussian noise of standard deviation ``sigma`` (Å) per Cartesian axis.

    Examples
    --------
    >>> from ase.build import bulk
    >>> moved = displace(bulk("Cu", "fcc", a=3.6, cubic=True), sigma=0.05, seed=0)
    >>> len(moved)
    4
    """
    atoms_only(atoms, "displace")
    if not (np.isfinite(sigma) and sigma >= 0.0):
        raise ValueError(f"sigma must be a finite non-negative number of Å, got {sigma}")
    rng = np.random.default_rng(seed)
    out = atoms.copy()
    out.positions = atoms.positions + rng.normal(0.0, sigma, size=atoms.positions.shape)
    return out
