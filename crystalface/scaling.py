"""Step 5 of the pipeline: length scaling, so the descriptor does not depend on the lattice constant."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from scipy.spatial import cKDTree

from .cell import StructureError

__all__ = ["nearest_neighbour_distance", "scale", "SCALINGS"]

#: Estimators of the nearest-neighbour distance: the paper's mean, and the median (robust to
#: atoms whose whole first shell is missing, as in heavily vacant clusters).
SCALINGS = ("mean", "median")


def nearest_neighbour_distance(atoms: Atoms, method: str = "mean") -> float:
    """Nearest-neighbour distance of a finite cluster in Å: ``method`` over atoms of each atom's shortest distance.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from crystalface import cluster
    >>> round(nearest_neighbour_distance(cluster(bulk("Cu", "fcc", a=3.6))), 4)  # a / sqrt(2)
    2.5456
    """
    if method not in SCALINGS:
        raise ValueError(f"method must be one of {SCALINGS}, got {method!r}")
    if len(atoms) < 2:
        raise StructureError("a cluster needs at least two atoms to measure a nearest-neighbour distance")
    d, _ = cKDTree(atoms.positions).query(atoms.positions, k=2)
    d = d[:, 1]
    value = float(np.mean(d) if method == "mean" else np.median(d))
    typical = float(np.median(d))
    if not typical > 1e-6 or d.min() < 1e-3 * typical:
        i = int(np.argmin(d))
        raise StructureError(f"atoms overlap: atom {i} is {d[i]:.2g} Å from another atom (typical spacing {typical:.3g} Å)")
    return value


def scale(atoms: Atoms, method: str = "mean") -> Atoms:
    """Divide all positions by the nearest-neighbour distance (SPEC step 5); returns a new cluster.

    The positions of the result are dimensionless (units of the nearest-neighbour distance); the
    distance used is kept in ``info["nn_distance"]`` (Å).

    Examples
    --------
    >>> from ase.build import bulk
    >>> from crystalface import cluster
    >>> scaled = scale(cluster(bulk("Cu", "fcc", a=3.6)))
    >>> round(scaled.info["nn_distance"], 4)
    2.5456
    """
    d = nearest_neighbour_distance(atoms, method)
    out = Atoms(numbers=atoms.numbers, positions=atoms.positions / d, pbc=False)
    out.info.update(atoms.info)
    out.info["nn_distance"] = d
    return out
