"""Step 2 of the pipeline: the orientation-free standard cell, built without any symmetry finder.

The paper (Methods; review round 2) puts every structure into the standard *conventional* cell of
Setyawan & Curtarolo (2010) using the convention for **triclinic** lattices — Niggli-reduced cell,
``a`` along x, ``b`` in the xy plane, ``c`` with positive z — and refines no position, so that no
symmetry information enters the descriptor.

That recipe depends on the lattice vectors the user happens to give: the same crystal given as a
primitive cell, as the conventional cell of a CIF or as a supercell ends up in three different
orientations, and so with three different fingerprints. We therefore first find the crystal's
*translation lattice* — the lattice of vectors that carry the structure onto itself — and apply the
triclinic convention to that lattice. Finding pure translations is not symmetry analysis (no point
operation is ever tried, no tolerance decides a space group); it tolerates vacancies and noise
because a translation is accepted when it maps *most* atoms onto atoms of the same element. No
library does this without a full symmetry search (spglib, moyo), which is exactly what the method
must not depend on, so it is written here.
"""

from __future__ import annotations

import itertools
import math
import os
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from ase import Atoms
from ase.geometry import minkowski_reduce
from scipy.spatial import cKDTree

__all__ = ["CUBIC_TOLERANCE", "LATTICE_FITS", "SYSTEM_TOLERANCE", "LatticeFound", "StructureError", "check_periodic",
           "cubic_lattice", "lattice_found", "lattice_fit", "lattice_system", "primitive_lattice", "standard_cell",
           "standard_orientation"]

#: Translations are tested on at most this many atoms of a large input (a fixed, evenly spaced subset).
_MAX_SCORED_ATOMS = 64
#: How many of the shortest difference vectors are tried as translations.
_MAX_CANDIDATES = 160
#: Candidates scored at a time, shortest first (the scan can stop after any chunk): 8 first, which
#: settles most Bravais lattices, then 16, 8, 8, 16 and 32 at a time. Of the throughput benchmark's
#: supercells (seed 4000) 60 % stop after 8 candidates and most others after 20-36: stopping after
#: 24, 32 or 40 instead of 24 or 56 scores 10 % fewer candidates in 10 % more chunks (-0.05 ms a
#: structure). The sizes never change the answer (tests/test_cell.py scans in one chunk).
_CHUNKS = (8, 16, 8, 8, 16, 32)
#: Smallest fraction of atoms a translation must carry onto atoms of the same element.
_MIN_SCORE = 0.55
#: The second search (:func:`_find_lattice`) runs when no candidate of the first one scored this
#: much (pristine crystals score ~1; a crystal with a fraction v of its sites vacant ~1 - v) ...
_SPARSE_BELOW = 0.8
#: ... or when the first one found no lattice finer than the cell of an input this large (a
#: supercell or an MD cell, not a primitive cell): with ~0.2 Å of noise, translations carry ~60 %
#: of the atoms onto atoms once refined (~40 % as drawn, see _RETRY_SCORE), and on 64 scored atoms
#: those scores scatter so much that the bar of 80 % of the best one drops some of the shortest.
_SUPERCELL_ATOMS = 64
#: The second search takes the difference vectors of this many atoms (one atom of a crystal with
#: half of its sites vacant misses half of the short translations), scores on up to this many
#: atoms, matches within this multiple of the first search's distance, and accepts from this score
#: (a translation carries 1 - v of the atoms onto atoms: 0.3 at 70 % vacancies). A vector that is
#: not a translation carries an atom onto an atom by chance when it lands within the matching
#: distance of one: ~22 % of the time at close packing with 1.4 x a quarter of the bond, so chance
#: vectors can pass this floor; what keeps them out of the lattice is that the cell must be an
#: integer combination of the basis they would form, and the shortest accepted vectors lattice
#: vectors of it (:func:`_search`). A vector between two sublattices (diamond, hcp) fails on its
#: double. On random gases and amorphous structures (Lindemann 0.3) no lattice comes out (tests).
_SPARSE_REFERENCES = 8
_SPARSE_SCORED_ATOMS = 256
_SPARSE_TOL = 1.4
_SPARSE_MIN_SCORE = 0.25
#: ... but in a sparse structure chance matches are rare, and the floor comes down to this many
#: binomial deviations above their rate (:func:`_sparse_floor`): with 80 % of the sites vacant a
#: translation carries ~20 % of the atoms onto atoms, a chance vector ~5 %, and the floor is ~20 %
#: (lattice found in 128 of 140 such supercells of the validation seed 5000, was 14; 3 deviations
#: put a lattice into 2 of 420 amorphous ones, 4 and 5 into none).
_SPARSE_CHANCE_DEVIATIONS = 5.0
#: In the second search the bar of 80 % of the best score is lowered by this many binomial standard
#: deviations of the best score (:func:`_accepted`). A crystal with 70 % of its sites vacant keeps
#: ~65 atoms of a 216-site supercell; a translation carries ~30 % of them onto atoms, +- 6 %, so the
#: bar set by the luckiest one (~40 %) drops a third of the translations, often the shortest, and
#: the rest can lie in a superlattice (a 6 x 6 x 6 cell whose 3 x 3 x 3 classes are filled unevenly
#: by chance). A vector that is not a translation lands on an occupied site by chance only ~22 % x
#: 30 % of the time, far below the 25 % floor; a vector between the two sublattices of a two-atom
#: basis carries about half as many as a translation, and with 2.0 deviations instead of 1.5 one
#: such vector of a beta-Sn supercell (50 % vacant, Lindemann 0.1) passed. Measured on the
#: validation seed 5000 (docs/method.md).
_SPARSE_SPREAD = 1.5
#: A candidate that carried at least this share of the atoms, and that moved by more than this
#: fraction of the matching distance when refined, is scored again from where it moved
#: (:func:`_score_candidates`): a translation of a hot crystal. In five 250-atom bcc Fe supercells
#: at 0.2 Å of noise, the 40 shortest candidates (all translations) scored a median 42 % (5-95 %
#: range 5-70 %) as drawn and 62 % (20-75 %) when scored again. 0.02 Å of noise moves a candidate
#: by ~0.05 Å, a twelfth of the matching distance: almost never scored again.
_RETRY_SCORE = 0.25
_RETRY_MOVE = 0.2
#: Query points a lattice search answers from the borrowed neighbour tree before it builds its own
#: (:class:`_PeriodicSearch`): building costs ~500 queries' time, and a query in the larger borrowed
#: tree ~15 % more than in its own, so past a few thousand points the search's own tree is cheaper.
#: 90 % of the throughput benchmark's supercells need fewer than 5 000; hot frames 15 000-120 000.
_BORROWED_QUERIES = 4096
#: Two atoms closer than this (Å) are one atom given twice, not a structure (shortest real bond: H2, 0.74 Å).
_MIN_SEPARATION = 0.1
#: KD-trees here are built for one structure and queried a few thousand times: splitting at the
#: midpoint instead of the median and not shrinking the nodes builds them faster, and the answers of
#: exact queries do not depend on it (standard_cell and vacuum_fraction bit-identical on 1300 supercells).
_TREE = {"balanced_tree": False, "compact_nodes": False}
#: The shifts -1, 0, 1 along one axis, and the 27 lattice shifts of a cell and its neighbours
#: (fractional coordinates).
_UNIT_SHIFTS = np.array([-1.0, 0.0, 1.0])
_SHIFTS = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=float)


class StructureError(ValueError):
    """A structure the method cannot handle, with the reason in one line."""


def atoms_only(atoms, caller: str, many: bool = False) -> list[Atoms]:
    """``atoms`` as a list of ase.Atoms; a TypeError that says what to do for anything else.

    Every step of the pipeline takes structures, not files: given a path (the most common slip) it
    says how to read it, instead of failing deep inside with "'str' object has no attribute
    'positions'". With ``many`` a sequence of ase.Atoms is accepted too (and one Atoms is a list of one).

    Examples
    --------
    >>> atoms_only("Cu.cif", "standard_cell")
    Traceback (most recent call last):
    ...
    TypeError: standard_cell takes ase.Atoms, not a path ('Cu.cif'): read it first with ase.io.read or crystalface.read_structures
    """
    if isinstance(atoms, Atoms):
        return [atoms]
    if isinstance(atoms, (str, bytes, os.PathLike)):
        files = "; crystalface.batch.classify_files classifies files" if caller == "classify" else ""
        raise TypeError(f"{caller} takes ase.Atoms, not a path ({atoms!r}): read it first with ase.io.read or "
                        f"crystalface.read_structures{files}")
    if not many:
        raise TypeError(f"{caller} takes one ase.Atoms, got {type(atoms).__name__}")
    try:
        structures = list(atoms)
    except TypeError:
        raise TypeError(f"{caller} takes ase.Atoms or a sequence of them, got {type(atoms).__name__}") from None
    wrong = next((i for i, a in enumerate(structures) if not isinstance(a, Atoms)), None)
    if wrong is not None:
        raise TypeError(f"{caller} takes ase.Atoms; item {wrong} is of type {type(structures[wrong]).__name__}")
    return structures


def check_periodic(atoms: Atoms) -> None:
    """Raise :class:`StructureError` unless ``atoms`` is a periodic crystal with three lattice vectors."""
    atoms_only(atoms, "check_periodic")
    _check_periodic(atoms)


def _check_periodic(atoms: Atoms) -> np.ndarray:
    """:func:`check_periodic`, returning the Minkowski-reduced cell it computed (rows, Å) for reuse."""
    if len(atoms) == 0:
        raise StructureError("the structure has no atoms")
    if not np.all(np.isfinite(atoms.positions)):
        raise StructureError("atomic positions contain NaN or infinity")
    cell = np.asarray(atoms.cell[:], dtype=float)
    if not np.all(np.isfinite(cell)):
        raise StructureError("lattice vectors contain NaN or infinity")
    if atoms.cell.rank < 3 or not np.all(atoms.pbc):
        raise StructureError(
            "the method needs three lattice vectors (a periodic crystal); this structure has "
            f"pbc={atoms.pbc.tolist()} and a cell of rank {atoms.cell.rank}"
        )
    lengths = np.linalg.norm(cell, axis=1)
    if abs(np.linalg.det(cell)) < 1e-6 * np.prod(lengths):
        raise StructureError("the lattice vectors are linearly dependent (singular cell)")
    if np.any(atoms.numbers < 1):
        raise StructureError(f"unknown element (atomic number 0, symbol 'X') at atom {int(np.argmin(atoms.numbers))}")
    # atoms on the same spot would be merged into one site by the fold of standard_cell, silently,
    # and so would an atom and its own periodic image: a cell 1e-9 Å thin along one axis is not
    # singular, but no crystal (ASE's Minkowski reduction overflows on a 1e-27 Å vector, its Niggli
    # reduction never ends on a 1e-9 Å one). Its vectors first, then the shortest vector of the lattice
    _refuse_short_vectors(lengths)
    reduced = _minkowski_reduced(cell)
    _refuse_short_vectors(_lengths(reduced))
    close = _close_pair(atoms.positions, reduced)
    if close is not None:
        raise StructureError(f"atoms {close[0]} and {close[1]} are closer than {_MIN_SEPARATION} Å (atoms on the same spot)")
    return reduced


def _close_pair(positions: np.ndarray, reduced: np.ndarray) -> tuple[int, int] | None:
    """A pair (i, j), i < j, of atoms closer than :data:`_MIN_SEPARATION` Å: i the lowest atom that
    has such a partner, j one of its partners; None when no two atoms are that close (``reduced``:
    the Minkowski-reduced cell, whose vectors are at least that long).

    Up to :data:`_REMEMBERED_ATOMS` atoms it asks the tree that :func:`_neighbours` builds and
    remembers for the standard cell, which holds every image within 1.5 mean spacings of the cell:
    each atom's second-nearest point of it (the first is the atom itself) is nearer than the limit
    exactly when a close partner exists (an image of the atom itself is a lattice vector away).
    That bounded query costs ~0.1 ms for ~280 atoms; a tree of its own cost ~0.25 ms, and it is
    still what a larger structure gets (:func:`_close_pairs`), whose neighbour tree is not remembered.
    """
    n = len(positions)
    if n == 1:
        return None
    neighbours = _neighbours(positions, reduced) if n <= _REMEMBERED_ATOMS else None
    # the tree holds every partner within its margin: enough unless the margin is below the limit
    # (denser than any matter)
    if neighbours is None or neighbours.margin < _MIN_SEPARATION:
        pairs = _close_pairs(_wrap(positions @ np.linalg.inv(reduced)), reduced, _MIN_SEPARATION)
        return tuple(int(k) for k in pairs[np.lexsort(pairs.T[::-1])[0]]) if len(pairs) else None
    d, point = neighbours.tree.query(neighbours.positions, k=2, distance_upper_bound=_MIN_SEPARATION)
    close = np.flatnonzero(d[:, 1] < _MIN_SEPARATION)
    if len(close) == 0:
        return None
    i = int(close[0])  # the lowest atom with a partner; its partner is a higher one
    # the two points found are the atom and its partner, or (atoms on exactly one spot) two partners
    return i, next(int(neighbours.atom[k]) for k in point[i] if neighbours.atom[k] != i)


def _close_pairs(frac: np.ndarray, cell: np.ndarray, distance: float) -> np.ndarray:
    """The pairs (i, j), i < j, of atoms at wrapped fractional positions ``frac`` closer than ``distance`` Å
    (nearest image along each lattice direction, :func:`_wrapped_offsets`), from a periodic KD-tree."""
    # every pair within `distance` Å lies within distance / (smallest singular value) in fractional coordinates
    pairs = cKDTree(frac, boxsize=1.0, **_TREE).query_pairs(distance / np.linalg.svd(cell, compute_uv=False).min(),
                                                            output_type="ndarray")
    return pairs[_wrapped_offsets(frac[pairs[:, 0]], frac[pairs[:, 1]], cell)[1] < distance]


def _refuse_short_vectors(lengths: np.ndarray) -> None:
    shortest = float(np.min(lengths))
    if shortest < _MIN_SEPARATION:
        raise StructureError(f"a lattice vector is only {shortest:.2g} Å long (shorter than {_MIN_SEPARATION} Å): "
                             "every atom would lie on its own periodic images")


def _minkowski_reduced(cell) -> np.ndarray:
    """Minkowski-reduced basis (rows, Å) of a lattice, as :func:`ase.geometry.minkowski_reduce` gives it.

    The last 512 answers are remembered by the exact bytes of ``cell`` (more than the 256
    structures of a chunk of :mod:`crystalface.batch`): the pipeline reduces the cell of every input
    twice (standard cell, then the vacuum check, which the pipeline runs right after it), and the
    frames of an MD run often share one cell. Returns a new array.

    Examples
    --------
    >>> np.linalg.norm(_minkowski_reduced([[1, 0, 0], [5, 1, 0], [0, 0, 1]]), axis=1).round(6).tolist()
    [1.0, 1.0, 1.0]
    """
    cell = np.ascontiguousarray(cell, dtype=float)
    return _minkowski_reduced_bytes(cell.tobytes()).copy()


@lru_cache(maxsize=512)
def _minkowski_reduced_bytes(cell_bytes: bytes) -> np.ndarray:
    return np.asarray(minkowski_reduce(np.frombuffer(cell_bytes).reshape(3, 3))[0], dtype=float)


def _wrap(frac: np.ndarray) -> np.ndarray:
    frac = frac - np.floor(frac)
    frac[frac >= 1.0] = 0.0  # floor of a number just below 1 can round up to exactly 1
    return frac


class _PeriodicSearch:
    """Nearest-atom queries within ``tol`` Å in a periodic cell, one k=1 KD-tree query per point.

    The tree holds, per element, the atoms of the cell and those of their periodic images that lie
    within ``tol`` of it (a fractional margin of ``tol`` / the cell's smallest singular value), in
    Cartesian coordinates; a query point wrapped into the cell then finds its nearest atom within
    ``tol`` whatever the cell's shape. (scipy's ``boxsize`` periodic tree works in fractional
    coordinates, whose metric is not the Cartesian one for a skewed cell.)

    ``neighbours`` (of the same positions and cell, :func:`_neighbours`) lends its tree, which holds
    the images within its margin, to a structure of one element when that margin reaches ``tol``:
    within ``tol`` it holds the same atoms, so every query finds the same one (to the last bit), and
    a cold structure, whose scan stops after ~1000 query points, builds no tree of its own (~0.2 ms
    for ~280 atoms). That tree holds ~2x the points, and each query in it costs ~15 % more: a search
    that goes on past :data:`_BORROWED_QUERIES` points (a hot structure: 15 000-120 000) builds its
    own tree then.
    """

    def __init__(self, frac: np.ndarray, numbers: np.ndarray, cell: np.ndarray, tol: float,
                 neighbours: _Neighbours | None = None):
        self.cell = cell
        self.tol = tol
        self.frac = _wrap(frac)
        self.numbers = numbers
        self.trees = {}
        self.index = {}
        self.borrowed = 0  # query points answered by the borrowed tree; -1: the trees are our own
        elements = np.unique(numbers)
        if neighbours is not None and len(elements) == 1 and tol <= neighbours.margin:
            self.index[elements[0]] = np.arange(len(numbers))
            self.trees[elements[0]] = (neighbours.tree, neighbours.atom)
        else:
            self._build_trees()

    def _build_trees(self) -> None:
        margin = self.tol / np.linalg.svd(self.cell, compute_uv=False).min()
        for z in np.unique(self.numbers):
            idx = np.flatnonzero(self.numbers == z)
            self.index[z] = idx
            images, atom = _images_near_cell(self.frac[idx], margin)
            self.trees[z] = (cKDTree(images @ self.cell, **_TREE), idx[atom])
        self.borrowed = -1

    def nearest(self, frac_points: np.ndarray, z: int) -> tuple:
        """Cartesian distance, atom index and vector to the nearest atom of element ``z`` from each point.

        Distance is inf (and index and vector meaningless) where no such atom lies within ``tol`` Å.
        """
        tree, atom, points, dist, j = self._query(frac_points, z)
        found = j < tree.n
        jj = np.where(found, j, 0)
        return dist, np.where(found, atom[jj], -1), tree.data[jj] - points

    def within(self, frac_points: np.ndarray, z: int) -> np.ndarray:
        """Whether an atom of element ``z`` lies within ``tol`` Å of each point: where :meth:`nearest`
        finds one, without gathering the atoms and vectors (the scores of the doubles 2t need only this)."""
        return np.isfinite(self._query(frac_points, z)[3])

    def _query(self, frac_points: np.ndarray, z: int) -> tuple:
        if self.borrowed >= 0:
            self.borrowed += len(frac_points)
            if self.borrowed > _BORROWED_QUERIES:
                self._build_trees()
        tree, atom = self.trees[z]
        points = _wrap(frac_points) @ self.cell
        dist, j = tree.query(points, k=1, distance_upper_bound=self.tol)
        return tree, atom, points, dist, j


def _scored_atoms(n: int, most: int = _MAX_SCORED_ATOMS) -> np.ndarray:
    """Indices of the atoms translations are tested on: all, or a fixed random subset of ``most`` of a large input.

    Random, not evenly spaced: files list atoms cell by cell, so every k-th atom can be the same
    site of the basis every time, and a vector between two sites then looks like a translation.
    """
    if n <= most:
        return np.arange(n)
    return _random_subset(n, most).copy()


@lru_cache(maxsize=64)
def _random_subset(n: int, most: int) -> np.ndarray:
    # remembered: drawing it (a new generator and a permutation of n) costs ~0.2 ms, twice per structure
    return np.sort(np.random.default_rng(0).choice(n, most, replace=False))


def _padded_tree(frac: np.ndarray, cell: np.ndarray, margin: float) -> tuple[cKDTree, np.ndarray]:
    """KD-tree (Cartesian) of the atoms at fractional positions ``frac`` in a Minkowski-reduced cell
    and of their images within ``margin`` Å of it, and the atom (row of ``frac``) each of its points
    is an image of.

    A point inside the cell finds its nearest atom (if it lies within ``margin``) in one query: 27x
    fewer queries than looking up the point's 27 images in a tree of the cell's atoms.
    """
    m = min(1.0, margin / np.linalg.svd(cell, compute_uv=False).min())  # beyond one cell: never nearer
    images, atom = _images_near_cell(frac, m)
    return cKDTree(images @ cell, **_TREE), atom


def _images_near_cell(frac: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The images of fractional positions under the 27 shifts by -1, 0, 1 that lie within ``margin`` of the unit cell.

    Returns ``(images, atom)``: fractional coordinates, shift by shift, and the row of ``frac`` each
    image comes from. ``margin`` is fractional (at most 1: the images of the neighbouring cells only).
    """
    # per axis and shift -1, 0, 1: which atoms' shifted coordinate stays within the margin; the 27
    # shifts combine them (in the order of _SHIFTS), and only the images kept are ever computed
    shifted = frac.T[:, None, :] + _UNIT_SHIFTS[None, :, None]  # (axis, shift, atom)
    ok = (shifted >= -margin) & (shifted <= 1 + margin)
    inside = (ok[0][:, None, None, :] & ok[1][None, :, None, :] & ok[2][None, None, :, :]).reshape(len(_SHIFTS), -1)
    shift, atom = np.nonzero(inside)
    return frac[atom] + _SHIFTS[shift], atom


def _neighbour_distances(frac: np.ndarray, cell: np.ndarray, query: np.ndarray,
                         margin: float) -> tuple[np.ndarray, cKDTree, np.ndarray]:
    """Exact distance from each of the ``query`` atoms (Cartesian, some of the atoms at fractional
    positions ``frac`` in the cell) to its nearest other atom, and the tree of the images within
    ``margin`` Å that found them with its atom map (:func:`_padded_tree`).

    That tree answers every distance up to ``margin`` exactly; when an atom's nearest neighbour is
    farther, all 26 neighbouring cells are searched instead (the returned tree stays the small one).
    """
    tree, atom = _padded_tree(frac, cell, margin)
    d = tree.query(query, k=2)[0][:, 1]  # k=2: the atom itself comes first
    if not np.all(d <= margin):
        d = _padded_tree(frac, cell, np.inf)[0].query(query, k=2)[0][:, 1]
    return d, tree, atom


class _Neighbours(NamedTuple):
    """What :func:`_neighbours` finds of a periodic structure in a Minkowski-reduced cell."""

    distance: float  #: median nearest-neighbour distance (Å) over up to 64 atoms (:func:`_scored_atoms`)
    tree: cKDTree  #: the atoms and their images within ``margin`` of the cell
    margin: float  #: Å; the tree answers every distance up to it exactly
    positions: np.ndarray  #: Cartesian positions wrapped into the cell
    frac: np.ndarray  #: the same, fractional (in [0, 1))
    atom: np.ndarray  #: the atom (row of ``positions``) each point of the tree is an image of


def _neighbours(positions: np.ndarray, cell: np.ndarray) -> _Neighbours:
    """The typical nearest-neighbour distance of a periodic structure and the tree that found it.

    The nearest neighbour of an atom in a reduced cell lies in the cell or one of its 26 neighbours;
    a tree of the images within 1.5 mean spacings (V / N)^(1/3) of the cell finds it whenever it is
    that close (almost always: the nearest neighbour is at most ~1.1 spacings away in the crystals
    we classify), and all 26 neighbouring cells are searched otherwise.

    The answers for the last few structures of up to :data:`_REMEMBERED_ATOMS` atoms are remembered
    by the exact bytes of ``positions`` and ``cell``: the standard cell asks for the tree (its check
    of atoms on one spot, :func:`_close_pair`, and its lattice search, :class:`_PeriodicSearch`) and
    for the distance (the matching distance of that search), and the vacuum check
    (:func:`crystalface.confidence.vacuum_fraction`), which the pipeline runs right after the
    standard cell (:func:`crystalface.pipeline.compute_fingerprints` with ``return_sites``), for
    both, of the same input.
    """
    positions = np.ascontiguousarray(positions, dtype=float)
    cell = np.ascontiguousarray(cell, dtype=float)
    if len(positions) > _REMEMBERED_ATOMS:
        return _neighbours_of(positions, cell)
    return _neighbours_bytes(positions.tobytes(), cell.tobytes())


#: Structures of more atoms are not remembered by :func:`_neighbours` (their trees take megabytes).
_REMEMBERED_ATOMS = 8192
#: Padding of the tree of :func:`_neighbours`, in mean spacings (V / N)^(1/3): every distance a bulk
#: crystal asks for is shorter. Any value gives the same answers, only slower or faster.
_NEIGHBOUR_SPACINGS = 1.5


@lru_cache(maxsize=4)
def _neighbours_bytes(positions_bytes: bytes, cell_bytes: bytes) -> _Neighbours:
    return _neighbours_of(np.frombuffer(positions_bytes).reshape(-1, 3), np.frombuffer(cell_bytes).reshape(3, 3))


def _neighbours_of(positions: np.ndarray, cell: np.ndarray) -> _Neighbours:
    # the tree's points are computed from the wrapped fractional positions as _PeriodicSearch
    # computes its own (the same expression, so the same bits), which lets it borrow this tree
    frac = _wrap(positions @ np.linalg.inv(cell))
    wrapped = frac @ cell
    spacing = (abs(np.linalg.det(cell)) / len(positions)) ** (1 / 3)
    margin = _NEIGHBOUR_SPACINGS * spacing
    d, tree, atom = _neighbour_distances(frac, cell, wrapped[_scored_atoms(len(wrapped))], margin)
    d = d[d > 1e-8]
    return _Neighbours(float(np.median(d)) if len(d) else float(spacing), tree, margin, wrapped, frac, atom)


def primitive_lattice(atoms: Atoms, tol: float | None = None) -> np.ndarray:
    """Primitive translation lattice of a periodic structure, as three row vectors in Å.

    A difference vector ``t`` between two atoms of one element is a lattice translation when it
    carries most atoms onto an atom of the same element (within ``tol``). Vacancies and noise lower
    that fraction for true translations only a little, while any vector that is not a translation
    maps at most two thirds of the atoms of the structures we classify, and its double far fewer;
    a vector is accepted when it and its double both map more than 55 % of the atoms and at least
    80 % as many as the best candidate. The three shortest independent translations form a basis (successive
    minima, true in three dimensions); the lattice vectors the user gave must be integer combinations
    of it, else the input lattice itself is returned.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic structure with three lattice vectors.
    tol : float, optional
        Matching distance in Å; default a quarter of the median nearest-neighbour distance.

    Returns
    -------
    numpy.ndarray
        3 x 3 array, rows are primitive lattice vectors exactly commensurate with ``atoms.cell``.

    Examples
    --------
    >>> from ase.build import bulk
    >>> lattice = primitive_lattice(bulk("Cu", "fcc", a=3.6, cubic=True))
    >>> round(float(abs(np.linalg.det(lattice))), 3)  # a^3 / 4
    11.664
    """
    atoms_only(atoms, "primitive_lattice")
    return _primitive_lattice(atoms, tol, _check_periodic(atoms))


def _primitive_lattice(atoms: Atoms, tol: float | None, cell: np.ndarray) -> np.ndarray:
    """:func:`primitive_lattice` of a structure :func:`check_periodic` has accepted; ``cell`` is its Minkowski-reduced cell."""
    return _find_lattice(atoms, tol, cell)[0]


def _find_lattice(atoms: Atoms, tol: float | None, cell: np.ndarray) -> tuple[np.ndarray, float]:
    """``(primitive lattice, matching distance)``: :func:`primitive_lattice` and the ``tol`` it used.

    The common path scores the difference vectors from one atom on up to 64 atoms (:func:`_search`),
    and settles every pristine or mildly defective structure. A crystal with half of its sites
    vacant or more (a translation carries only the occupied share of the atoms onto atoms, below
    :data:`_MIN_SCORE`) or a hot one (~0.2 Å of noise: the scores scatter) can leave it with no
    translation, or with no lattice finer than the cell. Then (:data:`_SPARSE_BELOW`,
    :data:`_SUPERCELL_ATOMS`) a second search runs, on the difference vectors of
    :data:`_SPARSE_REFERENCES` atoms, with :data:`_SPARSE_MIN_SCORE` (lower for a sparse structure), up to
    :data:`_SPARSE_SCORED_ATOMS` scored atoms, a :data:`_SPARSE_TOL` times wider matching
    distance and a bar lowered for the scatter of the scores (:data:`_SPARSE_SPREAD`); its lattice
    is taken when it is finer. The returned ``tol`` is the first search's.
    """
    n = len(atoms)
    if n == 1:
        return cell, np.inf
    positions = atoms.positions
    neighbours = None
    if tol is None:
        neighbours = _neighbours(positions, cell)
        tol = 0.25 * neighbours.distance
    # _neighbours computed them already, by the same expression and wrapped (wrapping again changes nothing)
    frac = positions @ np.linalg.inv(cell) if neighbours is None else neighbours.frac
    search = _PeriodicSearch(frac, atoms.numbers, cell, tol, neighbours)
    lattice, best = _search(search, atoms.numbers, cell, tol, 1, _MIN_SCORE, _MAX_SCORED_ATOMS)
    nothing_finer = abs(np.linalg.det(lattice)) > 0.5 * abs(np.linalg.det(cell))
    if (best < _SPARSE_BELOW and n >= 8) or (nothing_finer and n >= _SUPERCELL_ATOMS):
        wide = _SPARSE_TOL * tol
        search = _PeriodicSearch(frac, atoms.numbers, cell, wide, neighbours)
        floor = _sparse_floor(n / abs(np.linalg.det(cell)), wide, min(n, _SPARSE_SCORED_ATOMS))
        sparse, _ = _search(search, atoms.numbers, cell, wide, _SPARSE_REFERENCES, floor, _SPARSE_SCORED_ATOMS,
                            _SPARSE_SPREAD)
        if abs(np.linalg.det(sparse)) < 0.99 * abs(np.linalg.det(lattice)):  # a finer lattice: more translations found
            lattice = sparse
    return lattice, tol


def _sparse_floor(density: float, radius: float, n_scored: int) -> float:
    """The second search's floor: :data:`_SPARSE_MIN_SCORE`, lowered for a sparse structure to
    :data:`_SPARSE_CHANCE_DEVIATIONS` binomial deviations above the chance that a vector which is
    not a translation carries an atom onto one (an atom within ``radius`` of a random point: 1 -
    exp(-density x ball volume)), on ``n_scored`` atoms."""
    chance = 1.0 - np.exp(-density * 4.0 / 3.0 * np.pi * radius**3)
    return float(min(_SPARSE_MIN_SCORE, chance + _SPARSE_CHANCE_DEVIATIONS * np.sqrt(chance * (1 - chance) / n_scored)))


def _search(search: _PeriodicSearch, numbers: np.ndarray, cell: np.ndarray, tol: float, references: int,
            min_score: float, max_scored: int, spread: float = 0.0) -> tuple[np.ndarray, float]:
    """``(lattice, best score)``: the primitive lattice from the difference vectors of ``references`` atoms
    (``cell`` when none is found) and the highest score of a candidate translation (0 when none was scored)."""
    n = len(numbers)
    # candidate translations: min-image difference vectors from atoms of the rarest element
    counts = {z: len(idx) for z, idx in search.index.items()}
    z_ref = min(counts, key=lambda z: (counts[z], z))
    ref_idx = search.index[z_ref]
    if len(ref_idx) == 1:
        return cell, 0.0
    refs = ref_idx[:1] if references == 1 else ref_idx[_scored_atoms(len(ref_idx), references)]
    diff = (search.frac[ref_idx][None, :, :] - search.frac[refs][:, None, :]).reshape(-1, 3)
    diff -= np.round(diff)
    cart = diff @ cell
    length = _lengths(cart)
    cart = _candidate_translations(cart[length > tol], tol, _MAX_CANDIDATES)

    # score every candidate t, and its double 2t, on a fixed subset of atoms. A vector that carries
    # one sublattice onto another (diamond, hcp: half of the atoms) has a double that carries almost
    # none, whereas the double of a translation is a translation.
    scored = _scored_atoms(n, max_scored)
    refined, accepted, scores = _score_candidates(search, cart, scored, numbers, np.linalg.inv(cell), min_score, spread)
    best = float(scores.max()) if len(scores) else 0.0

    translations = refined[accepted]
    primitive = _commensurate_lattice(translations, translations, cell)
    if primitive is None and len(translations) >= 2:
        # the sums and differences of translations are translations too: where scatter in the
        # scores left the shortest ones out (a crystal with most of its sites vacant), the lattice
        # the accepted ones generate is found among them (_with_sums_and_differences)
        primitive = _commensurate_lattice(_with_sums_and_differences(translations, 2 * tol), translations, cell)
    if primitive is None and len(translations) >= 3:
        # a large hot cell (an MD snapshot): a basis measured on short translations is too coarse to
        # express a cell of dozens of periods in it; measured again along its multiples, it is not
        def lengthen(basis: np.ndarray) -> np.ndarray:
            return _refined_along_multiples(search, basis, scored, numbers, cell, min_score)

        primitive = _commensurate_lattice(translations, translations, cell, lengthen)
    if primitive is None:
        return cell, best
    return minkowski_reduce(primitive)[0][:], best


def _commensurate_lattice(vectors: np.ndarray, translations: np.ndarray, cell: np.ndarray,
                          lengthen=None) -> np.ndarray | None:
    """The lattice of the three shortest independent ``vectors`` (given shortest first), fitted to
    the accepted ``translations`` (and then by ``lengthen``, a function of the basis, when given)
    and made exactly commensurate with ``cell``; None when the cell is not an integer combination
    of it or the shortest translations are not lattice vectors of it."""
    # lattice vectors of the cell are translations too: after the given ones (shortest first)
    # they complete a basis along directions in which the cell holds a single period (a 1x1x4 cell)
    basis = _shortest_basis([*vectors, *cell[np.argsort(np.linalg.norm(cell, axis=1))]])
    if len(basis) < 3:
        return None
    basis_arr = _refit_basis(np.array(basis), translations)
    if lengthen is not None:
        basis_arr = lengthen(basis_arr)
    # express the cell in that basis; the integer matrix gives the exact (noise-free) primitive lattice
    m = cell @ np.linalg.inv(basis_arr)
    m_int = np.round(m)
    det = round(abs(np.linalg.det(m_int)))
    if np.abs(m - m_int).max() > 0.2 or det < 1:
        return None
    primitive = np.linalg.solve(m_int, cell)
    # the basis may be a superlattice of the translations it was built from only if the successive
    # minima failed; the shortest accepted translations must be lattice vectors of it
    check = translations[:8] @ np.linalg.inv(primitive)
    if len(check) and np.abs(check - np.round(check)).max() > 0.2:
        return None
    return primitive


def _refined_along_multiples(search: _PeriodicSearch, basis: np.ndarray, scored: np.ndarray, numbers: np.ndarray,
                             cell: np.ndarray, min_score: float) -> np.ndarray:
    """``basis`` (rows, Å) measured again along its multiples 2, 4, 8, ... up to the size of ``cell``.

    A translation refined on the scored atoms (:func:`_carry`) is off by the mean of their
    displacements, ~0.02 Å at 0.1 Å of noise whatever its length. The basis fitted to the short
    translations of a hot crystal is off by that much, and the cell expressed in it by that much
    times the periods it holds: in a cell of 30 x 30 x 30 conventional cells (108 000 atoms of fcc
    copper, 60 periods of the primitive lattice along a cell vector), more than the 0.2 that
    :func:`_commensurate_lattice` allows. The double of each basis vector, refined on the atoms and
    halved, is twice as precise, and lands within the matching distance of the translation it
    stands for as long as the basis is off by less than half of it; each doubling halves the error
    until the multiples span the cell. Stops where a multiple carries fewer than ``min_score`` of
    the scored atoms onto atoms (not a translation: the basis is left as it was measured so far).
    """
    groups, start_frac = _scored_groups(search, scored, numbers)
    inv_cell = np.linalg.inv(cell)
    periods = np.abs(cell @ np.linalg.inv(basis)).max()  # the most periods of a basis vector in a cell vector
    k = 2
    while k < min(periods, 2**20):  # 2**20: a bound whatever the basis (a cell of a million periods is no crystal's)
        vectors = k * basis
        hits = _carry(search, groups, start_frac, vectors @ inv_cell, vectors)  # refines `vectors` in place
        if np.any(hits < min_score * len(scored)):
            break
        basis = vectors / k
        k *= 2
    return basis


def _with_sums_and_differences(translations: np.ndarray, shortest: float, most: int = 40) -> np.ndarray:
    """``translations`` with the sums and differences of pairs of the first ``most`` of them, longer
    than ``shortest`` Å (shorter ones are noise: two near-equal vectors), all sorted shortest first.

    In a crystal with 70 % of its sites vacant a translation carries ~30 % of the scored atoms onto
    atoms, with a binomial scatter of several per cent, so the 80 %-of-best bar of
    :func:`_accepted` can drop the shortest translations and keep longer ones whose three shortest
    span a superlattice. The differences of the kept ones give the dropped ones back.
    """
    head = translations[:most]
    i, j = np.triu_indices(len(head), k=1)
    vectors = np.concatenate([translations, head[i] - head[j], head[i] + head[j]])
    length = _lengths(vectors)
    keep = length > shortest
    return vectors[keep][np.argsort(length[keep], kind="stable")]


def _refit_basis(basis: np.ndarray, translations: np.ndarray, rounds: int = 2) -> np.ndarray:
    """The basis fitted (least squares) to every accepted translation it spans with integer coefficients.

    Each translation refined from noisy atoms is off by its mean mismatch; the three shortest are
    off by as much, and the cell expressed in them (``m``, entries up to the number of repeats of
    a supercell) by that much times the repeats: 0.2 for 0.2 Å noise on a 7 x 7 x 7 supercell,
    where rounding ``m`` to integers starts to fail. Fitted to dozens of translations, some several
    times longer, the basis is several times more precise. Exact input gives the same basis.
    """
    for _ in range(rounds):
        coefficients = translations @ np.linalg.inv(basis)
        integers = np.round(coefficients)
        good = np.abs(coefficients - integers).max(axis=1) < 0.2
        if good.sum() < 4 or np.linalg.matrix_rank(integers[good]) < 3:
            break
        basis = np.linalg.lstsq(integers[good], translations[good], rcond=None)[0]
    return basis


def _score_candidates(search: _PeriodicSearch, cart: np.ndarray, scored: np.ndarray, numbers: np.ndarray,
                      inv_cell: np.ndarray, min_score: float, spread: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(refined, accepted, scores)``: the vectors refined on the atoms, which are translations
    (:func:`_accepted` with ``min_score`` and ``spread``) and every candidate's score (0 where the scan stopped before it).

    A candidate's score is the fraction of the ``scored`` atoms that t and 2t both carry onto atoms
    of the same element; each t is refined by the mean mismatch of the atoms it carries. Where that
    moves t by more than :data:`_RETRY_MOVE` of the matching distance (a hot crystal; noise-free
    input never moves), t is scored again from the refined vector, and that score counts.

    Candidates come shortest first and are scored in chunks (:data:`_CHUNKS`). The scan stops early
    when the answer can no longer change: the accepted candidates so far span three dimensions, are
    at least eight and all score >= 0.8 (no later candidate, whose score is at most 1, can then lift
    the 80 %-of-best bar above them). The basis is built from the shortest accepted vectors, so
    later, longer candidates would not enter it. For a pristine or mildly defective supercell of a
    Bravais lattice, where every difference vector is a translation, this scores the first 8 of 160
    candidates. The chunk sizes only change how much is scored, never the answer. The double 2t is
    scored only where t itself reaches the minimum score.
    """
    n_scored = len(scored)
    scores = np.zeros(len(cart))
    refined = cart.copy()
    groups, start_frac = _scored_groups(search, scored, numbers)
    done = 0
    for size in itertools.chain(_CHUNKS, itertools.repeat(_CHUNKS[-1])):
        if done >= len(cart):
            break
        chunk = slice(done, min(done + size, len(cart)))
        shift = cart[chunk] @ inv_cell
        hits = _carry(search, groups, start_frac, shift, refined[chunk])
        # in a hot crystal a candidate, the difference of two displaced atoms, is off by both their
        # displacements and carries fewer atoms within tol than the translation it stands for; moved
        # by the mean mismatch of the atoms it did carry, it is scored once more from there
        # (_RETRY_MOVE). A candidate of noise-free input does not move and is never scored again.
        retry = np.flatnonzero((hits >= _RETRY_SCORE * n_scored)
                               & (_lengths(refined[chunk] - cart[chunk]) > _RETRY_MOVE * search.tol))
        if len(retry):
            rows = refined[chunk][retry]
            shift[retry] = rows @ inv_cell
            hits[retry] = _carry(search, groups, start_frac, shift[retry], rows)
            refined[chunk.start + retry] = rows
        doubles = np.zeros(len(shift))
        promising = np.flatnonzero(hits >= min_score * n_scored)  # others cannot be accepted whatever 2t scores
        for z, atoms_z in groups:
            if len(promising):
                points = (start_frac[z][None, :, :] + 2 * shift[promising][:, None, :]).reshape(-1, 3)
                doubles[promising] += search.within(points, z).reshape(len(promising), len(atoms_z)).sum(axis=1)
        scores[chunk] = np.minimum(hits, doubles) / n_scored
        done = chunk.stop
        accepted = _accepted(scores[:done], min_score, n_scored, spread)
        if (done < len(cart) and accepted.sum() >= 8 and scores[:done][accepted].min() >= 0.8
                and len(_shortest_basis(refined[:done][accepted])) == 3):
            break
    accepted = np.zeros(len(cart), dtype=bool)
    accepted[:done] = _accepted(scores[:done], min_score, n_scored, spread)
    return refined, accepted, scores


def _scored_groups(search: _PeriodicSearch, scored: np.ndarray, numbers: np.ndarray) -> tuple[list, dict]:
    """The ``scored`` atoms by element, [(z, indices)], and their fractional positions {z: (k, 3)}, as :func:`_carry` takes them."""
    groups = [(z, scored[numbers[scored] == z]) for z in np.unique(numbers[scored])]
    return groups, {z: search.frac[atoms_z] for z, atoms_z in groups}


def _carry(search: _PeriodicSearch, groups, start_frac: dict, shift: np.ndarray, refined: np.ndarray) -> np.ndarray:
    """How many of the scored atoms each fractional ``shift`` carries onto an atom of their element;
    each row of ``refined`` (the shifts in Å, changed in place) moves by the mean mismatch of those atoms."""
    hits = np.zeros(len(shift))
    for z, atoms_z in groups:
        points = (start_frac[z][None, :, :] + shift[:, None, :]).reshape(-1, 3)
        dist, _, vec = search.nearest(points, z)
        found = np.isfinite(dist).reshape(len(shift), len(atoms_z))
        carried = found.sum(axis=1)
        hits += carried
        vec = np.where(found.reshape(-1, 1), vec, 0.0).reshape(len(shift), len(atoms_z), 3)
        refined += vec.sum(axis=1) / np.maximum(carried, 1)[:, None]
    return hits


def _candidate_translations(vectors: np.ndarray, tol: float, max_candidates: int) -> np.ndarray:
    """The shortest ``max_candidates`` distinct difference vectors, each taken once up to its sign.

    ``t`` is a translation exactly when ``-t`` is: every vector is turned into the half-space of a
    fixed, generic direction and repeats (within ``tol`` Å) are dropped, so the candidate budget
    reaches twice as far. Vectors shorter than ``tol`` must already be removed.
    """
    vectors = np.where((vectors @ np.array([0.5772, 0.5774, 0.5776]) < 0)[:, None], -vectors, vectors)
    # repeats: equal rounded coordinates, compared as one integer key per vector (np.unique over
    # rows sorts them lexicographically, several times slower); the first of each is kept
    grid = np.round(vectors / tol).astype(np.int64)
    grid -= grid.min(axis=0)
    span = grid.max(axis=0) + 1
    _, first = np.unique((grid[:, 0] * span[1] + grid[:, 1]) * span[2] + grid[:, 2], return_index=True)
    vectors = vectors[np.sort(first)]
    order = np.argsort(_lengths(vectors), kind="stable")[:max_candidates]
    return vectors[order]


def _accepted(scores: np.ndarray, min_score: float = _MIN_SCORE, n_scored: int = 0, spread: float = 0.0) -> np.ndarray:
    """Which candidates are translations, from the fraction of atoms each (and its double) carries onto atoms.

    A translation carries more than half of the atoms onto atoms (more than any sublattice map of
    the structures we classify) and scores close to the best candidate; vacancies lower both. With
    ``spread`` > 0 the bar of 80 % of the best score is lowered by that many binomial standard
    deviations of the best score on ``n_scored`` atoms (see :data:`_SPARSE_SPREAD`). The bar can then
    only rise with the best score above 0.5, and never above 0.8, as the early stop of
    :func:`_score_candidates` needs.
    """
    best = scores.max() if len(scores) else 0.0
    bar = 0.8 * best
    if spread and n_scored:
        bar -= spread * np.sqrt(best * (1.0 - best) / n_scored)
    return scores >= max(min_score, bar)


def _shortest_basis(vectors) -> list[np.ndarray]:
    """The first three independent vectors of ``vectors`` (given shortest first): successive minima."""
    basis: list[np.ndarray] = []
    for t in vectors:
        if _independent(basis, t):
            basis.append(t)
            if len(basis) == 3:
                break
    return basis


def _independent(basis: list[np.ndarray], t: np.ndarray) -> bool:
    """True when ``t`` is clearly out of the line (one vector) or plane (two vectors) of ``basis``."""
    if len(basis) == 0:
        return True
    if len(basis) == 1:
        return _norm(_cross(basis[0], t)) > 0.25 * _norm(basis[0]) * _norm(t)
    normal = _cross(basis[0], basis[1])
    return abs(normal @ t) > 0.25 * _norm(normal) * _norm(t)


def _norm(vector: np.ndarray) -> float:
    """``np.linalg.norm`` of a 3-vector, computed as it computes it (the square root of the vector's
    dot with itself: the same bits) without its ~1 µs of argument handling; the lattice search asks
    for a few dozen per structure."""
    return math.sqrt(vector.dot(vector))


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.cross`` of two 3-vectors, with the same products and differences (the same bits) at a tenth
    of its cost: np.cross handles any shape, which costs ~50 us per call, and the lattice search
    calls it a few times per candidate vector. Of two (3, N) arrays, the cross products of their
    columns, (3, N)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _wrapped_offsets(frac: np.ndarray, centre: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets, lengths)``: fractional ``frac - centre`` with each coordinate wrapped into [-0.5, 0.5]
    (the nearest image in each lattice direction), and their Cartesian lengths (Å) in ``cell``."""
    diff = frac - centre
    diff -= np.round(diff)
    return diff, _lengths(diff @ cell)


def _lengths(vectors: np.ndarray) -> np.ndarray:
    """Lengths of the rows of an (N, 3) array, as ``np.linalg.norm(vectors, axis=1)`` computes them,
    sqrt((x^2 + y^2) + z^2), the same bits at a third of the cost (its sum over a 3-long axis is slow)."""
    x, y, z = vectors[:, 0], vectors[:, 1], vectors[:, 2]
    return np.sqrt(x * x + y * y + z * z)


def standard_orientation(lattice: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Niggli-reduce a lattice and put it in the triclinic standard orientation.

    Returns ``(standard, rotation)``: ``standard`` is the reduced lattice (rows), oriented with the
    Niggli ``a`` along +x, ``b`` in the xy plane with positive y and ``c`` with positive z; ``rotation`` is the proper rotation matrix that
    carries a Cartesian row vector of the input frame into that frame (``r_new = r @ rotation``).
    The lattice vectors' signs then follow Setyawan & Curtarolo (2010) as pymatgen implements them:
    reciprocal angles all acute or all obtuse, obtained by flipping two of the vectors where needed.
    The flip relabels the cell only (a flipped vector points along -x, say); the orientation of the
    crystal is the one fixed before it.

    ``eps`` is the tolerance of the Niggli reduction relative to the cube root of the cell volume
    (ASE's ``epsfactor``). A lattice measured from noisy positions (:mod:`crystalface.local`) needs a
    larger one: the reduced cell of fcc sits on a boundary of the Niggli conditions (all angles 60
    degrees), and noise of 0.1 % in the vectors picks another, equally short cell with other angles
    (90, 120), which orients the crystal differently.

    Examples
    --------
    >>> from ase.build import bulk
    >>> standard, rotation = standard_orientation(bulk("Fe", "bcc", a=2.87).cell[:])
    >>> bool(np.allclose(standard[0, 1:], 0) and np.isclose(standard[1, 2], 0))
    True
    """
    lattice = np.asarray(lattice, dtype=float)
    op = _niggli_operation(lattice, eps)
    reduced = op.T @ lattice  # ASE returns the transposed integer operation
    if np.linalg.det(reduced) < 0:  # keep a right-handed basis: inversion is a symmetry of every lattice
        reduced = -reduced
    a, b, c = reduced
    x = a / _norm(a)
    z = _cross(a, b)
    z /= _norm(z)
    y = _cross(z, x)
    rotation = np.column_stack([x, y, z])  # r_new = r @ rotation
    oriented = reduced @ rotation
    oriented[0, 1:] = 0.0
    oriented[1, 2] = 0.0
    for signs in ((1, 1, 1), (-1, 1, -1), (-1, -1, 1), (1, -1, -1)):
        candidate = oriented * np.array(signs)[:, None]
        if _reciprocal_angles_all_acute_or_obtuse(candidate):
            return candidate, rotation
    return oriented, rotation


def _niggli_operation(lattice: np.ndarray, eps: float) -> np.ndarray:
    """The integer operation of ASE's Niggli reduction of a lattice of three vectors (rows), the
    ``op`` of ``ase.cell.Cell(lattice).niggli_reduce(eps=eps)``, bit for bit.

    ASE's public call also rebuilds the reduced cell from its six cell parameters
    (``Cell.fromcellpar``), which the standard orientation does not use: 0.16 -> 0.04 ms, of the ~3 ms
    the standard cell of a ~280-atom structure takes. Here ASE's reduction itself
    (``ase.build.niggli._niggli_reduce``, private) runs on the metric and with the tolerance ASE's
    public call computes for a full-rank lattice; the public call is the fallback, and a test
    compares the two.
    """
    try:
        from ase.build.niggli import _niggli_reduce
    except ImportError:  # an ASE that moved it
        from ase.cell import Cell

        return Cell(lattice).niggli_reduce(eps=eps)[1]
    a, b, c = lattice
    metric = np.array([a @ a, b @ b, c @ c, 2 * (b @ c), 2 * (c @ a), 2 * (a @ b)])
    return _niggli_reduce(metric, eps * abs(np.linalg.det(lattice)) ** (1 / 3))[1]


def _reciprocal_angles_all_acute_or_obtuse(lattice: np.ndarray) -> bool:
    rec = np.linalg.inv(lattice).T
    norms = _lengths(rec)
    cos = (rec[1] @ rec[2] / (norms[1] * norms[2]), rec[0] @ rec[2] / (norms[0] * norms[2]),
           rec[0] @ rec[1] / (norms[0] * norms[1]))
    return all(c >= -1e-10 for c in cos) or all(c < 1e-10 for c in cos)


def standard_cell(atoms: Atoms, tol: float | None = None) -> Atoms:
    """The structure in its orientation-free standard cell (SPEC step 2), without a symmetry finder.

    The primitive translation lattice (:func:`primitive_lattice`) is Niggli-reduced and oriented
    with the triclinic convention (:func:`standard_orientation`); no atomic position is refined.
    When the structure repeats exactly with that lattice (a pristine crystal given as primitive
    cell, conventional cell or supercell) the result is the primitive standard cell with one copy
    of each atom. Otherwise (a defective or noisy supercell) every atom is kept and the result is
    the user's cell, rotated into the standard frame, so that the defects survive into the cluster.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic structure (three lattice vectors). It is not modified.
    tol : float, optional
        Matching distance in Å (see :func:`primitive_lattice`).

    Returns
    -------
    ase.Atoms
        Periodic structure in the standard frame; ``info["primitive"]`` tells which case applied,
        ``info["occupancy"]`` is the fraction of the crystal's sites that hold an atom
        (:func:`_sites_and_occupancy`; 1 for a primitive result and where no finer lattice was found),
        and ``info["sites"]`` the number of sites in one cell of the lattice found (the atoms of a
        primitive result; the sites the atoms of a defective one gather on), absent where the atoms
        show no clear basis (:func:`lattice_fit` says which case applied). Where a defective
        result has ``info["sites"]``, its per-atom arrays ``arrays["site"]`` (which of those sites
        the atom sits on, 0 .. sites - 1; -1 for an atom on none of them) and
        ``arrays["displacement"]`` (Å, from the centre of its site; zero on no site) say where each
        atom sits: :func:`crystalface.cluster` reads them. Where ``info["sites"]`` is given,
        ``info["lattice_system"]`` is the lattice system of the lattice found (:func:`lattice_system`,
        within 1.5 %), and where that lattice is metrically
        cubic within 0.5 % (:func:`cubic_lattice`), ``info["cubic_lattice"]`` names it ("cP", "cF" or "cI").

    Examples
    --------
    >>> from ase.build import bulk
    >>> cell = standard_cell(bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2))
    >>> len(cell), cell.info["primitive"]
    (1, True)
    """
    atoms_only(atoms, "standard_cell")
    lattice, tol = _find_lattice(atoms, tol, _check_periodic(atoms))
    standard, rotation = standard_orientation(lattice)
    positions = atoms.positions @ rotation
    user_cell = np.asarray(atoms.cell[:]) @ rotation
    index = round(abs(np.linalg.det(user_cell) / np.linalg.det(standard)))
    result = None
    if index >= 1 and len(atoms) % index == 0:
        result = _fold(atoms.numbers, positions, standard, len(atoms) // index)
    if result is None:
        result = Atoms(numbers=atoms.numbers, positions=positions, cell=user_cell, pbc=True)
        result.info["primitive"] = False
        found = _sites_and_occupancy(positions, standard, index, 2.0 * tol) if index > 1 else _Sites(None, 1.0)
        for _ in range(3):  # a lattice found up to eight times as fine as the crystal's
            if found.count is None:
                break
            halved, coarser = _halved(positions, standard, user_cell, found)
            if halved is found:
                break
            found, standard = halved, coarser
        result.info["occupancy"] = found.occupancy
        if found.count is not None:
            result.info["sites"] = found.count
            result.new_array("site", found.site)
            result.new_array("displacement", found.displacement)
    else:
        result.info["primitive"] = True
        result.info["occupancy"] = 1.0
        result.info["sites"] = len(result)
    if "sites" in result.info:
        cubic = cubic_lattice(standard)
        if cubic is not None:
            result.info["cubic_lattice"] = cubic
        result.info["lattice_system"] = lattice_system(standard)
    for key in ("source", "index"):
        if key in atoms.info:
            result.info[key] = atoms.info[key]
    return result


#: How the lattice :func:`standard_cell` found fits the atoms (:func:`lattice_fit`): "exact", the
#: structure folds onto it with one atom per site (``info["primitive"]``); "sites", its atoms gather
#: on the sites of its basis, some vacant or displaced (``info["sites"]`` counts them); "none", they
#: gather on no clear set of sites (a lattice found on part of a hot structure).
LATTICE_FITS = ("exact", "sites", "none")


def lattice_fit(info: dict) -> str:
    """Which of :data:`LATTICE_FITS` the ``info`` of a :func:`standard_cell` result says.

    Examples
    --------
    >>> from ase.build import bulk
    >>> lattice_fit(standard_cell(bulk("Cu", "fcc", a=3.6, cubic=True)).info)
    'exact'
    """
    if info.get("primitive"):
        return "exact"
    return "sites" if info.get("sites") is not None else "none"


class LatticeFound(NamedTuple):
    """What the standard cell found about a structure's lattice, as :func:`crystalface.confidence.assess`
    judges it: the ``sites`` per primitive cell (``info["sites"]``, None where unknown), how the
    lattice ``fit`` the atoms (:func:`lattice_fit`), its ``cubic`` Bravais type
    (``info["cubic_lattice"]``, None where it is not cubic) and its lattice ``system``
    (``info["lattice_system"]``, :func:`lattice_system`); and the ``vacuum`` fraction of the input's
    cell (:func:`crystalface.confidence.vacuum_fraction`), measured where the pipeline measures it
    right after the standard cell (``compute_fingerprints(..., return_sites=True)``), with the
    standard cell's neighbour tree; all None where the structure failed or it was not measured."""

    sites: int | None = None
    fit: str | None = None
    cubic: str | None = None
    system: str | None = None
    vacuum: float | None = None


def lattice_found(info: dict) -> LatticeFound:
    """The :class:`LatticeFound` of a :func:`standard_cell` result's ``info`` (or of a cluster cut from it).

    Examples
    --------
    >>> from ase.build import bulk
    >>> lattice_found(standard_cell(bulk("Fe", "bcc", a=2.87, cubic=True).repeat(2)).info)
    LatticeFound(sites=1, fit='exact', cubic='cI', system='cubic', vacuum=None)
    """
    return LatticeFound(info.get("sites"), lattice_fit(info), info.get("cubic_lattice"), info.get("lattice_system"))


#: Largest relative difference between the lengths of the shortest lattice vectors of a lattice and
#: those of a cubic one of the same volume for the lattice to count as cubic (:func:`cubic_lattice`).
#: Crystals the generator draws for the non-cubic classes come within ~1 % of a cubic lattice with a
#: cubic class's sites (of 7000 drawn with seed 3000: none within 0.5 %, 16 within 1 %: alpha-As
#: near c/a = 2.5, on its lattice or its one-site pseudo-cubic one, hR1 about a degree from 60 or
#: 90 degrees, bct139 near c/a = sqrt(2)); half of that keeps clear of them, while the lattice of a
#: periodic input (its box divided by integers) is exact however hot the crystal.
CUBIC_TOLERANCE = 5e-3


def _shortest_lengths(lattice: np.ndarray, count: int = 18) -> np.ndarray:
    """The ``count`` shortest nonzero lattice vector lengths, over the cube root of the cell volume.

    Takes the integer combinations -2..2 of ``lattice``'s rows, which hold the 18 shortest vectors of
    a Niggli- or Minkowski-reduced basis of a near-cubic lattice (checked against -3..3 on 3000 random bases).
    """
    vectors = _COMBINATIONS @ np.asarray(lattice, dtype=float)
    lengths = np.sort(_lengths(vectors))[:count]
    return lengths / abs(np.linalg.det(lattice)) ** (1 / 3)


_COMBINATIONS = np.array([n for n in itertools.product(range(-2, 3), repeat=3) if any(n)], dtype=float)
#: The 18 shortest lengths of the three cubic lattices (the shells of 6 + 12 vectors of cP, 12 + 6 of
#: cF, 8 + 6 + 4 of the next 12 of cI), per cube root of the primitive cell volume.
_CUBIC_LENGTHS = {
    name: _shortest_lengths(np.array(basis, dtype=float))
    for name, basis in (("cP", np.eye(3)), ("cF", [[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]),
                        ("cI", [[-0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.5, 0.5, -0.5]]))
}


def cubic_lattice(lattice: np.ndarray, tolerance: float = CUBIC_TOLERANCE) -> str | None:
    """The cubic Bravais type ("cP", "cF" or "cI") of a reduced lattice that is metrically cubic, else None.

    A lattice is cubic of a type when its 18 shortest vector lengths agree with those of that type at
    the same volume within ``tolerance`` (relative). A lattice is fixed up to rotation by the lengths of
    all its vectors (in three dimensions the representation numbers of a quadratic form determine it,
    Schiemann 1997), and the first shells tell a cubic lattice from a strained one: a tetragonal strain
    of 1 % (c/a = 1.01) moves some of them by 0.67 %, a rhombohedral one that turns the cube's angles
    by ~1 degree by 1-2 %, beyond the tolerance, while a strain of a tenth of that passes. Written
    here rather than taken from ASE's ``Cell.get_bravais_lattice`` (0.4-1 ms; spglib on a one-atom
    cell 1-9 ms): this takes ~20 µs, and the standard cell asks it of every structure.

    Parameters
    ----------
    lattice : numpy.ndarray
        3 x 3, rows are the vectors of a Niggli- or Minkowski-reduced basis (:func:`standard_orientation`).
    tolerance : float
        Largest relative difference of the lengths (:data:`CUBIC_TOLERANCE`).

    Examples
    --------
    >>> from ase.build import bulk
    >>> cubic_lattice(bulk("Cu", "fcc", a=3.6).cell[:]), cubic_lattice(bulk("Mg", "hcp", a=3.2).cell[:])
    ('cF', None)
    """
    lengths = _shortest_lengths(lattice)
    for name, cubic in _CUBIC_LENGTHS.items():
        if np.max(np.abs(lengths / cubic - 1.0)) <= tolerance:
            return name
    return None


#: Tolerance of :func:`lattice_system`: a basis change counts as a symmetry of the lattice when it
#: keeps every length within this fraction and every product of two vectors within twice it times
#: their lengths. A periodic input's lattice is its box divided by integers, exact however hot the
#: crystal; what this allows for is a box strained as a whole. An NPT run's cell of a few hundred
#: atoms fluctuates by a few tenths of a per cent in each strain component: of 600 hexagonal and 600
#: tetragonal lattices under random strains of 0.3 % (standard deviation per component) none loses
#: its system at 1.5 %, while at 1 % 3-5 % did (under 0.5 % strains: 4-7 % at 1.5 %, 0-1 % at 2 %).
#: A hexagonal crystal strained beyond that in its basal plane is orthorhombic by symmetry.
SYSTEM_TOLERANCE = 1.5e-2

#: The 26 integer combinations -1..1 of three basis vectors: the shifts to the neighbouring cells.
_UNIT_COMBINATIONS = _SHIFTS[np.any(_SHIFTS != 0, axis=1)]


def lattice_system(lattice: np.ndarray, tolerance: float = SYSTEM_TOLERANCE) -> str:
    """The lattice system of a reduced lattice ("cubic", "hexagonal", "tetragonal", "rhombohedral",
    "orthorhombic", "monoclinic" or "triclinic"), from the rotations that keep its metric.

    A symmetry of a lattice is an integer basis change N, det N = +-1, that keeps the metric:
    N G N^T = G, G the Gram matrix of the basis rows. In a Niggli- or Minkowski-reduced basis its
    entries are -1, 0 or 1 (the search of spglib's lattice symmetry and of Le Page's program), so
    each row of N is one of 26 combinations with the length of the basis vector it maps. The system
    is named by the rotations found (N or -N, whichever is proper; the order from the trace): a
    six-fold one, hexagonal; three- and four-fold ones, cubic; a four-fold one, tetragonal; a
    three-fold one, rhombohedral; three two-fold ones, orthorhombic; one, monoclinic. (Counting all
    the operations would do for exact lattices, but near the tolerance the ones kept need not form a
    group, and a count can then match another system's: a strained cubic lattice counted as hexagonal.)
    The metric is compared within ``tolerance``: lengths relative, products of two vectors within 2 x
    ``tolerance`` x their lengths. Written here rather than taken from spglib (a one-atom cell: 1-9
    ms) or ASE's ``Cell.get_bravais_lattice`` (0.4-1 ms): this takes ~60 µs, and the standard cell
    asks it of every structure.

    Parameters
    ----------
    lattice : numpy.ndarray
        3 x 3, rows are the vectors of a Niggli- or Minkowski-reduced basis (:func:`standard_orientation`).
    tolerance : float
        :data:`SYSTEM_TOLERANCE` by default.

    Examples
    --------
    >>> from ase.build import bulk
    >>> lattice_system(bulk("Cu", "fcc", a=3.6).cell[:]), lattice_system(bulk("Mg", "hcp", a=3.2).cell[:])
    ('cubic', 'hexagonal')
    >>> lattice_system(np.diag([3.0, 3.2, 4.0]))
    'orthorhombic'
    """
    basis = np.asarray(lattice, dtype=float)
    gram = basis @ basis.T
    norms = np.sqrt(np.diag(gram))
    allowed = 2.0 * tolerance * np.outer(norms, norms)
    products = _UNIT_COMBINATIONS @ gram @ _UNIT_COMBINATIONS.T  # of every two of the 26 combinations
    # the rows of N that can map basis vector k: combinations of (nearly) its length
    rows = [np.flatnonzero(np.abs(np.diag(products) - gram[k, k]) <= allowed[k, k]) for k in range(3)]
    # pairs of images of the first two vectors at their angle, then the third at its two angles
    i, j = np.nonzero(np.abs(products[np.ix_(rows[0], rows[1])] - gram[0, 1]) <= allowed[0, 1])
    i, j = rows[0][i], rows[1][j]
    ok = ((np.abs(products[i][:, rows[2]] - gram[0, 2]) <= allowed[0, 2])
          & (np.abs(products[j][:, rows[2]] - gram[1, 2]) <= allowed[1, 2]))
    pair, third = np.nonzero(ok)
    n = np.stack([_UNIT_COMBINATIONS[i[pair]], _UNIT_COMBINATIONS[j[pair]], _UNIT_COMBINATIONS[rows[2][third]]], axis=1)
    det = np.linalg.det(n)
    unimodular = np.abs(np.abs(det) - 1.0) < 1e-6
    proper = n[unimodular] * np.sign(det[unimodular])[:, None, None]
    # the trace of a proper rotation is 1 + 2 cos(angle): 2 six-fold, 1 four-fold, 0 three-fold, -1 two-fold
    traces = np.rint(np.trace(proper, axis1=1, axis2=2)).astype(int)
    orders = set(traces.tolist())
    if 0 in orders and 1 in orders:
        return "cubic"
    if 2 in orders:
        return "hexagonal"
    if 1 in orders:
        return "tetragonal"
    if 0 in orders:
        return "rhombohedral"
    # distinct two-fold rotations (N and -N give the same proper rotation), each entry -1..1 a base-3 digit
    twofold = len(set((np.rint(proper[traces == -1]).reshape(-1, 9) + 1) @ 3 ** np.arange(9)))
    return "orthorhombic" if twofold >= 3 else "monoclinic" if twofold >= 1 else "triclinic"


def _fold(numbers, positions, cell, n_sites, tight=0.01) -> Atoms | None:
    """Fold positions into ``cell``; return its atoms if they fall on exactly ``n_sites`` sites.

    ``tight`` (Å) is the distance below which two folded atoms count as one site: large enough
    for rounding in files, small enough that thermal noise keeps every atom (no averaging).
    """
    frac = _wrap(positions @ np.linalg.inv(cell))
    if n_sites > _FOLD_SCAN_SITES:
        return _fold_by_pairs(numbers, frac, cell, n_sites, tight)
    sites: list[int] = []
    remaining = np.arange(len(frac))
    while len(remaining):
        i = remaining[0]
        same = _wrapped_offsets(frac[remaining], frac[i], cell)[1] < tight
        if np.any(numbers[remaining[same]] != numbers[i]):
            return None
        sites.append(i)
        if len(sites) > n_sites:
            return None
        remaining = remaining[~same]
    if len(sites) != n_sites:
        return None
    return Atoms(numbers=numbers[sites], scaled_positions=frac[sites], cell=cell, pbc=True)


#: :func:`_fold` scans the atoms site by site (n atoms x sites: fast for the few sites of a crystal's
#: basis) up to this many sites, and looks up close pairs in a KD-tree beyond (an MD cell of 10^5
#: atoms in which no finer lattice was found is 10^5 sites: hours by the scan, a second by the tree).
_FOLD_SCAN_SITES = 64


def _fold_by_pairs(numbers, frac, cell, n_sites, tight) -> Atoms | None:
    """:func:`_fold` of wrapped fractional positions from the pairs of atoms closer than ``tight``
    (the same sites: each the first atom, in input order, not within ``tight`` of an earlier site)."""
    partners: dict[int, list[int]] = {}
    for i, j in _close_pairs(frac, cell, tight).tolist():
        partners.setdefault(i, []).append(j)
        partners.setdefault(j, []).append(i)
    taken = np.zeros(len(frac), dtype=bool)
    sites: list[int] = []
    for i in range(len(frac)):
        if taken[i]:
            continue
        same = [j for j in partners.get(i, ()) if not taken[j]]
        if np.any(numbers[same] != numbers[i]):
            return None
        taken[same] = True
        sites.append(i)
    if len(sites) != n_sites:
        return None
    return Atoms(numbers=numbers[sites], scaled_positions=frac[sites], cell=cell, pbc=True)


#: Sites of the primitive cell holding fewer atoms than this share of the fullest one are not sites
#: of the crystal (interstitials, atoms displaced far from their site).
_MIN_SITE_SHARE = 0.2
#: More distinct sites than this in the primitive cell: no clear basis, the occupancy is taken as 1.
_MAX_SITES = 64
#: Fewer of the atoms than this on the counted sites: no clear basis either (a lattice found on part
#: of a very hot crystal, say), the occupancy is taken as 1.
_MIN_ON_SITES = 0.9


class _Sites(NamedTuple):
    """What :func:`_sites_and_occupancy` finds: ``count`` sites in the primitive cell (None: no
    clear basis), the ``occupancy`` of the crystal's sites, and per atom its ``site`` (0 .. count -
    1, -1 for an atom on none of them) and ``displacement`` (Å) from the centre of that site."""

    count: int | None
    occupancy: float
    site: np.ndarray | None = None
    displacement: np.ndarray | None = None


#: Significance at which the displacements of a site's atoms differ between the two halves of a
#: sublattice of index 2 (:func:`_halved`), over all the sublattices and sites tested (Bonferroni):
#: one structure in a thousand with a right lattice is split. Chosen on the validation cells of
#: benchmarks/small_cells.py (draws 1000-1009): thermal noise on the right lattice gave p-values of
#: 0.01 and more in every draw, the two hot Ti cells whose lattice search took an A-B vector 1e-5
#: and 3e-7 (36 atoms: Hotelling's test on 18 + 18 displacements has little power).
_HALVES_SIGNIFICANCE = 1e-3
#: Fewest atoms in each half of a site for the halves to be compared.
_HALF_ATOMS = 8
#: The seven sublattices of index 2 of a lattice: those of the integer points n with p . n even.
_PARITIES = np.array([p for p in itertools.product((0, 1), repeat=3) if any(p)])


def _halved(positions: np.ndarray, lattice: np.ndarray, user_cell: np.ndarray, found: _Sites) -> tuple[_Sites, np.ndarray]:
    """``(sites, lattice)``: the sites on a sublattice of index 2 of ``lattice`` where the atoms' displacements
    say that it, not ``lattice``, is the crystal's; else ``found`` and ``lattice`` as they are.

    Under noise the lattice search can take a vector between two sublattices of the crystal for a
    translation when its double is one (hot hcp at Lindemann ~0.1: the vector from an A to a B
    layer site, its double a translation, carries half of the atoms within the widened matching
    distance of an atom): the lattice found is then twice as fine as the crystal's, its one site
    holds both sublattices, and their atoms sit on either side of it, -d/2 and +d/2 with d the
    vector's mismatch (0.9 Å). So does a pristine crystal whose ordered distortion the search took for
    noise (alpha-As near simple cubic, +-0.15 Å on its cubic pseudo-lattice). Split by the parity
    p . n of their lattice points n, the atoms of such a site fall into two groups whose mean
    displacements differ by d; thermal noise gives no such difference. Hotelling's two-sample test
    (F distribution) compares them for each of the seven sublattices of index 2 that contain the
    user's cell (the structure repeats with it) and each site with at least :data:`_HALF_ATOMS`
    atoms in each half; below a p-value of :data:`_HALVES_SIGNIFICANCE` over all the tests, each site is
    split in two (twice the sites, on a lattice with half as many points in the cell: the occupancy
    is the same) and the displacements are taken from the halves' centres. The orientation of the
    standard cell is not changed (it was fixed from ``lattice``). Written here: it is a question about
    the lattice search's own result, which no library asks.
    """
    inverse = np.linalg.inv(lattice)
    cell_points = np.rint(user_cell @ inverse).astype(int)  # the user's cell vectors in lattice coordinates
    parities = _PARITIES[~np.any(cell_points @ _PARITIES.T % 2, axis=0)]
    if not len(parities):
        return found, lattice
    site, displacement = found.site, found.displacement
    ideal = (positions - displacement) @ inverse  # the lattice coordinates of each atom's site image
    points = np.zeros((len(site), 3), dtype=int)  # of its lattice point, from the site's first atom
    from scipy.special import fdtrc  # imported with scipy.spatial already

    tests = []  # (p-value, which parity), every sublattice at once for each site
    for s in range(found.count):
        on = np.flatnonzero(site == s)
        points[on] = np.rint(ideal[on] - ideal[on[0]]).astype(int)
        half = points[on] @ parities.T % 2  # (atoms, parities): 1 in the second half
        n1 = half.sum(axis=0)
        n0 = len(on) - n1
        tested = np.flatnonzero(np.minimum(n0, n1) >= _HALF_ATOMS)
        if not len(tested):
            continue
        half, n0, n1, m = half[:, tested], n0[tested], n1[tested], len(on)
        d = displacement[on]
        mean1 = (d.T @ half) / n1  # (3, parities)
        mean0 = (d.sum(axis=0)[:, None] - mean1 * n1) / n0
        within = (d.T @ d)[None] - np.einsum("k,ik,jk->kij", n1, mean1, mean1) - np.einsum("k,ik,jk->kij", n0, mean0, mean0)
        pooled = within / (m - 2) + 1e-12 * np.eye(3)  # 1e-6 Å: a pristine order is certain
        delta = (mean1 - mean0).T
        t2 = n0 * n1 / m * np.einsum("ki,ki->k", delta, np.linalg.solve(pooled, delta[:, :, None])[:, :, 0])
        tests += zip(fdtrc(3, m - 4, t2 * (m - 4) / (3 * (m - 2))), tested)
    if not tests:
        return found, lattice
    p_value, best = min(tests)
    if p_value * len(tests) >= _HALVES_SIGNIFICANCE:
        return found, lattice
    p = parities[best]
    halves = np.where(site >= 0, 2 * site + points @ p % 2, -1)
    kept, new_site = np.unique(halves, return_inverse=True)  # numbered 0, 1, ... (a half may be empty)
    new_site = new_site.reshape(-1) - int(kept[0] < 0)
    count = int(new_site.max()) + 1
    new_displacement = displacement.copy()
    for s in range(count):
        on = new_site == s
        new_displacement[on] -= displacement[on].mean(axis=0)
    j = int(np.flatnonzero(p)[0])  # a basis of the sublattice: 2 e_j and e_k + p_k e_j
    basis = np.array([2 * lattice[j] if k == j else lattice[k] + p[k] * lattice[j] for k in range(3)])
    return _Sites(count, found.occupancy, new_site, new_displacement), minkowski_reduce(basis)[0][:]


def _sites_and_occupancy(positions: np.ndarray, lattice: np.ndarray, index: int, radius: float) -> _Sites:
    """Sites of the crystal's basis, the fraction of its sites that hold an atom (1 - the vacancy
    fraction, at most 1), and which site each atom sits on.

    ``positions`` (Å) are folded into the primitive cell ``lattice`` (rows; the user's cell holds
    ``index`` of them) and grouped into sites: atoms within ``radius`` of a site's centre (min-image
    distance), the centre moved to their mean once, site after site. Sites holding fewer than
    :data:`_MIN_SITE_SHARE` of the fullest site's atoms do not count. The crystal has
    ``sites x index`` sites, of which ``len(positions)`` hold an atom. When the counted sites hold
    fewer than :data:`_MIN_ON_SITES` of the atoms, or there are more than :data:`_MAX_SITES`, the
    lattice does not describe the atoms well: ``_Sites(None, 1.0)`` (no basis; the ball of ``n_atoms`` atoms).

    Why it matters: a ~256-atom ball cut from a structure with half of its sites vacant is twice as
    big as the balls the network was trained on (and its fingerprint another picture); SPEC's
    defective structures keep the ball of the pristine crystal and lose atoms from it
    (:meth:`crystalface.pipeline.Descriptor.cluster` uses this fraction for that).

    Examples
    --------
    >>> from ase.build import bulk
    >>> atoms = bulk("Cu", "fcc", a=3.6).repeat(4)
    >>> del atoms[::2]
    >>> found = _sites_and_occupancy(atoms.positions, bulk("Cu", "fcc", a=3.6).cell[:], 64, 1.0)
    >>> found.count, found.occupancy, set(found.site.tolist())
    (1, 0.5, {0})
    """
    inverse = np.linalg.inv(lattice)
    frac = _wrap(positions @ inverse)
    remaining = np.arange(len(frac))
    members = []
    displacement = np.zeros((len(frac), 3))
    while len(remaining) and len(members) <= _MAX_SITES:
        centre = frac[remaining[0]]
        for recentre in (True, False):  # seed at an atom, recentre on the atoms found, take those
            diff, distance = _wrapped_offsets(frac[remaining], centre, lattice)
            near = distance < radius
            if recentre:
                centre = centre + diff[near].mean(axis=0)  # the seed itself is near: never empty
        members.append(remaining[near])
        displacement[remaining[near]] = diff[near] @ lattice
        remaining = remaining[~near] if near.any() else remaining[1:]
    if len(members) > _MAX_SITES:
        return _Sites(None, 1.0)
    sizes = np.array([len(m) for m in members])
    counted = np.flatnonzero(sizes >= _MIN_SITE_SHARE * sizes.max())
    if sizes[counted].sum() < _MIN_ON_SITES * len(positions):
        return _Sites(None, 1.0)  # atoms far from every site: a lattice that is not the crystal's, or a liquid
    site = np.full(len(frac), -1)
    for k, group in enumerate(counted):
        site[members[group]] = k
    displacement[site < 0] = 0.0
    return _Sites(len(counted), float(min(1.0, len(positions) / (len(counted) * index))), site, displacement)
