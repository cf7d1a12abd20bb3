"""Step 5 of the pipeline: length scaling, so the descriptor does not depend on the lattice constant."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from scipy.spatial import cKDTree

from .cell import StructureError, _lengths, atoms_only

__all__ = ["nearest_neighbour_distance", "scale", "SCALINGS", "SHELL_BANDWIDTH", "LEGACY_SHELL_BANDWIDTH"]

#: Estimators of the nearest-neighbour distance: the paper's mean of each atom's shortest distance,
#: its median, and "shell", the position of the first peak of the pair-distance distribution.
SCALINGS = ("mean", "median", "shell")

#: Width (standard deviation, in units of the typical nearest-neighbour distance) of the Gaussian
#: that smooths the pair-distance histogram of the "shell" estimator. 0.02 keeps a first shell split
#: by ~10 % (alpha-As, beta-Sn, non-ideal hcp) resolved under noise up to ~0.1 Å, so that the
#: estimate stays on the first sub-shell instead of jumping to the merged peak; chosen on the
#: validation set (seed 5000), see docs/method.md "The width of the shell estimator".
SHELL_BANDWIDTH = 0.02
#: The width before crystalface 0.1.9: what models whose card names no ``shell_bandwidth`` were trained with.
LEGACY_SHELL_BANDWIDTH = 0.04


def _check_bandwidth(value: float, name: str = "bandwidth") -> None:
    """Raise ValueError unless ``value`` is a smoothing width in (0, 0.2] nearest-neighbour distances."""
    if not 0 < value <= 0.2:
        raise ValueError(f"{name} must be in (0, 0.2] (units of the nearest-neighbour distance), got {value!r}")


def _first_shell(positions: np.ndarray, tree: cKDTree, rough: float, bandwidth: float = SHELL_BANDWIDTH) -> float:
    """Position (Å) of the first peak of the pair-distance distribution.

    Every atom's shortest distance is biased by defects: Gaussian noise shortens the minimum over a
    shell (by ~4 % for 0.1 Å on a 2.5 Å bond), and an atom whose whole first shell is vacant reports
    its second shell. The pair-distance distribution is not: noise broadens its first peak
    symmetrically and vacancies thin every shell alike. So: smooth the histogram of pair distances
    with a Gaussian of width ``bandwidth`` x ``rough``, take its first peak that is at least 30 % as
    high as the highest one below 2 x ``rough``, and return the mean of the pair distances within
    8 % of it.
    """
    pairs = tree.query_pairs(2.0 * rough, output_type="ndarray")
    # np.take: the rows positions[pairs[:, i]], at half the cost of indexing with a strided column
    r = _lengths(np.take(positions, pairs[:, 0], axis=0) - np.take(positions, pairs[:, 1], axis=0))
    if len(r) == 0:
        return rough
    from scipy.ndimage import gaussian_filter1d

    width = 0.005 * rough
    hist, edges = np.histogram(r, bins=int(np.ceil(2.0 / 0.005)), range=(0.0, 2.0 * rough))
    smooth = gaussian_filter1d(hist.astype(float), sigma=bandwidth / 0.005, mode="constant")
    # the first of the peaks of _prominent_peaks(smooth, 0.05 x highest) that are 30 % as high as the
    # highest: the prominence, the costly part, is taken only of peaks that high, until one has it
    top = smooth.max()
    first = next((p for p in _peaks(smooth) if smooth[p] >= 0.3 * top and _prominence(smooth, p) >= 0.05 * top), None)
    if first is None:
        return rough
    centre = edges[first] + width / 2
    window = r[np.abs(r - centre) <= 0.08 * centre]
    return float(window.mean()) if len(window) else float(centre)


def _prominent_peaks(x: np.ndarray, prominence: float) -> np.ndarray:
    """Indices of the peaks of ``x`` at least ``prominence`` high above their surroundings, in order:
    ``scipy.signal.find_peaks(x, prominence=prominence)[0]``, the same indices.

    Written here because importing ``scipy.signal`` imports ``scipy.stats`` and costs ~1.5 s: once
    per process, paid by every worker of a batch and every Dask worker (a seventh of the whole run
    for 1000 structures on 2 cores), for one call on a 400-point curve. It follows SciPy's
    definitions exactly (tests compare the two): a peak is a run of equal values higher than both
    neighbours (neither run end at the array's edge) and sits at the run's middle, rounded down;
    its prominence is its height above the higher of the lowest points between it and the nearest
    higher value on each side (or the array's end).
    """
    x = np.asarray(x, dtype=float)
    if len(x) == 0:
        return np.array([], dtype=np.intp)
    peaks = _peaks(x)
    keep = np.array([_prominence(x, p) >= prominence for p in peaks], dtype=bool)
    return peaks[keep]


def _peaks(x: np.ndarray) -> np.ndarray:
    """Indices of the peaks of a non-empty float array ``x``, in order, whatever their prominence (:func:`_prominent_peaks`)."""
    starts = np.flatnonzero(np.concatenate(([True], x[1:] != x[:-1])))  # runs of equal values
    ends = np.append(starts[1:] - 1, len(x) - 1)
    value = x[starts]
    higher_than_before = np.concatenate(([False], value[1:] > value[:-1]))
    higher_than_after = np.concatenate((value[:-1] > value[1:], [False]))
    peak = higher_than_before & higher_than_after
    return (starts[peak] + ends[peak]) // 2


def _prominence(x: np.ndarray, peak: int) -> float:
    """SciPy's prominence of ``x[peak]``: on each side, the lowest point before a higher value (or the end)."""
    higher = x > x[peak]
    left = np.flatnonzero(higher[:peak])
    right = np.flatnonzero(higher[peak:])
    left_min = x[(left[-1] + 1 if len(left) else 0):peak + 1].min()
    right_min = x[peak:peak + (right[0] if len(right) else len(x) - peak)].min()
    return x[peak] - max(left_min, right_min)


def nearest_neighbour_distance(atoms: Atoms, method: str = "shell", bandwidth: float = SHELL_BANDWIDTH) -> float:
    """Nearest-neighbour distance of a finite cluster in Å.

    ``method`` "mean" (the paper) and "median" summarise each atom's shortest distance over atoms;
    "shell" is the first peak of the pair-distance distribution, which neither noise nor vacancies
    shift (see :func:`_first_shell`), found after smoothing by ``bandwidth`` (:data:`SHELL_BANDWIDTH`).

    Examples
    --------
    >>> from ase.build import bulk
    >>> from crystalface import cluster
    >>> round(nearest_neighbour_distance(cluster(bulk("Cu", "fcc", a=3.6))), 4)  # a / sqrt(2)
    2.5456
    """
    atoms_only(atoms, "nearest_neighbour_distance")
    if method not in SCALINGS:
        raise ValueError(f"method must be one of {SCALINGS}, got {method!r}")
    _check_bandwidth(bandwidth)
    if len(atoms) < 2:
        raise StructureError("a cluster needs at least two atoms to measure a nearest-neighbour distance")
    tree = cKDTree(atoms.positions)
    d, _ = tree.query(atoms.positions, k=2)
    d = d[:, 1]
    typical = float(np.median(d))
    if not typical > 1e-6 or d.min() < 1e-3 * typical:
        i = int(np.argmin(d))
        raise StructureError(f"atoms overlap: atom {i} is {d[i]:.2g} Å from another atom (typical spacing {typical:.3g} Å)")
    if method == "shell":
        return _first_shell(atoms.positions, tree, typical, bandwidth)
    return float(np.mean(d) if method == "mean" else typical)


def scale(atoms: Atoms, method: str = "shell", bandwidth: float = SHELL_BANDWIDTH) -> Atoms:
    """Divide all positions by the nearest-neighbour distance (SPEC step 5); returns a new cluster.

    The default estimator, "shell", is the first peak of the pair-distance distribution; the paper's
    "mean" of each atom's shortest distance shrinks by ~7 % under 0.1 Å of noise and grows by up to
    ~18 % at 70 % vacancies, which moves every diffraction peak and was the main cause of errors on
    defective structures (see docs/method.md).

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
    atoms_only(atoms, "scale")
    d = nearest_neighbour_distance(atoms, method, bandwidth)
    out = Atoms(numbers=atoms.numbers, positions=atoms.positions / d, pbc=False)
    out.info.update(atoms.info)
    out.info["nn_distance"] = d
    return out
