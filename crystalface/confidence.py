"""When not to trust a label: the out-of-distribution flag of every prediction (``confident``, ``score``).

A network trained on pristine crystals of seven classes gives *some* class to any input, and its
softmax is a poor guard: amorphous structures and random gases come back with a median maximum
probability of 0.75-0.98 depending on the model, one in twenty above 0.997 (docs/reliability.md).
The score therefore multiplies the network's probability by two things the network cannot judge:

* **Crystallinity of the fingerprint** (model-independent). A crystal diffracts into Bragg spots:
  a few pixels carry most of the intensity (|sum_j f_j e^{iq.r_j}|^2 ~ N^2 on a spot, ~N between
  spots). Disorder moves intensity from the spots into diffuse scattering spread over the whole
  detector; for a fully random structure the pixel intensities follow speckle statistics and the
  brightest 1 % of the pixels hold only ~4 % of the intensity. :func:`bragg_fraction` is that share;
  :func:`crystallinity` maps it to [0, 1] with a logistic in its logarithm, calibrated between
  pristine/25 %-vacancy crystals and amorphous (Lindemann >= 0.3) structures.
* **Domain of the training set** (model-independent, on the periodic input). The model knows bulk
  elemental solids: a structure with several elements, or with empty regions wider than twice the
  nearest-neighbour distance (a slab, a molecule or a few atoms in a box), is outside it whatever
  its fingerprint looks like (:func:`domain_problem`).
* **Basis of the lattice found** (model-independent, from the standard cell). Every class has one
  or two atoms in its primitive cell (hex/rh one to four, :data:`crystalface.classes.BASIS_SITES`);
  the standard cell (SPEC step 2) finds the crystal's translations and the sites its atoms sit on.
  A label whose class cannot have that many sites (hexagonal diamond, four sites, called ``diam``;
  molecular iodine, four, called ``bct141``) contradicts the structure (:func:`basis_problem`).
  More than four sites in a primitive cell the structure folds onto exactly, or more than 64 on
  any lattice (a structure in which no lattice finer than a cell of that many atoms was found:
  amorphous, molten, or a crystal of no class, its fingerprint taken in that cell's frame), and
  atoms that gather on no clear set of sites of the lattice found (a lattice found on part of a
  hot structure) contradict every label. Counts of five to 64 on a lattice with atoms missing from
  its sites are not judged: that lattice can be coarser than the crystal's (most sites vacant),
  and a wrong count there would flag right labels. A lattice found cubic with the sites of a cubic
  class (one on cF, cI or cP; two on cF) contradicts a label of bct139, bct141 or hex/rh
  (:func:`lattice_problem`): the network gives such labels to hot cubic crystals in MD boxes, whose
  lattice (the box divided by integers) stays exactly cubic however hot they are. A lattice of
  another system (:func:`crystalface.cell.lattice_system`) contradicts a bct or hex/rh label too:
  a bct crystal's lattice is tetragonal, a hex/rh crystal's hexagonal (with two or four sites) or
  rhombohedral. The other way round, one site on a cubic lattice proves fcc, bcc or sc
  (:func:`lattice_confirms`), and such a label keeps its confidence whatever the novelty says.

* **Novelty in the network's own features** (model-dependent, stored with the model). A crystal
  of a kind the network never saw (black P, A15, gamma-Se ...) can diffract sharply and still come
  out with a high probability for some class; but its activations in the penultimate layer lie far
  from those of every training class. :meth:`crystalface.model.Model.novelty` measures that
  distance in units of the farthest training crystal; above :data:`NOVELTY_LIMIT` the prediction
  is not confident.

    score = P(predicted class) x crystallinity(bragg_fraction) x [in domain] x [basis fits the label]
            x [lattice does not contradict the label] x [novelty <= NOVELTY_LIMIT or lattice proves the label],
    confident = score >= THRESHOLD

The constants below were calibrated by ``python benchmarks/confidence.py`` on structures of
``generate_structures(..., seed=2000)`` (the training set is seed 0, the robustness benchmark seed
1000) and measured on seed 3000; numbers in docs/reliability.md and benchmarks/confidence.json.
The Bragg-fraction constants depend on the descriptor only (they hold for the default: 256-atom
cluster, 64 x 64 detector); the threshold was checked for the shipped model.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from .cell import _MAX_SITES, LATTICE_FITS, LatticeFound, _minkowski_reduced, _neighbours, _padded_tree
from .classes import BASIS_SITES, CUBIC_SIGNATURES, LATTICE_SYSTEMS, SYSTEM_SITES
from .fingerprint import DF2D

__all__ = [
    "THRESHOLD", "NOVELTY_LIMIT", "basis_problem", "bragg_fraction", "crystallinity", "domain_problem",
    "lattice_confirms", "lattice_problem", "score", "vacuum_fraction", "assess", "assess_with_reasons", "doubts",
]

#: Share of the detector pixels (inside the mask) whose intensity :func:`bragg_fraction` sums.
TOP_PIXELS = 0.01
#: Bragg fraction at which :func:`crystallinity` is 0.5 (geometric middle of the calibration gap).
BRAGG_CENTRE = 0.14
#: Slope of :func:`crystallinity` in ln(Bragg fraction): 0.99 at the crystals' edge, 0.01 at the amorphous edge.
BRAGG_SLOPE = 5.39
#: A prediction is confident when its score reaches this value.
THRESHOLD = 0.5
#: Largest novelty (in units of the farthest training crystal) of a confident prediction. Thermal
#: noise moves crystals away from the training set too: on the calibration seed, 9 % of crystals at
#: Lindemann 0.05 (a crystal well below melting) lie beyond 1, none beyond 1.9; twice the farthest
#: training crystal keeps those confident and still flags most crystals of unknown types
#: (docs/reliability.md).
NOVELTY_LIMIT = 2.0
#: Empty regions count from this distance to every atom, in nearest-neighbour distances.
VACUUM_DISTANCE = 2.0
#: Largest fraction of the cell volume allowed farther than VACUUM_DISTANCE from every atom.
MAX_VACUUM = 0.01


def bragg_fraction(images: np.ndarray, params: DF2D = DF2D()) -> np.ndarray:
    """Share of the diffracted intensity carried by the brightest 1 % of the detector pixels.

    Invariant to the min-max normalisation of the fingerprint (a ratio of intensities). Crystals give
    0.3-0.7 (Bragg spots), fully disordered structures ~0.04 (speckle).

    Parameters
    ----------
    images : numpy.ndarray
        Fingerprints, (3, n, n) or (B, 3, n, n), as made with ``params``.
    params : DF2D
        Descriptor parameters (for the detector mask).

    Returns
    -------
    numpy.ndarray
        One value in (0, 1] per image (a 0-d array for one image); 0 for an all-zero image.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from crystalface import Descriptor
    >>> float(bragg_fraction(Descriptor()(bulk("Cu", "fcc", a=3.6)))) > 0.3
    True
    """
    images = np.asarray(images)
    if images.dtype not in (np.float32, np.float64):
        images = images.astype(np.float64)
    single = images.ndim == 3
    batch = images[None] if single else images
    # the pixels in the mask, in the images' own precision (float32 from fingerprint), (B, 3 x pixels in
    # the mask): the order of batch[:, :, mask], gathered by np.take in one copy (the mask gave two, 4x slower)
    b, channels, rows, columns = batch.shape
    pixels = np.take(batch.reshape(b, channels, rows * columns), np.flatnonzero(params.mask()), axis=2)
    pixels = pixels.reshape(b, channels * pixels.shape[2])
    n = pixels.shape[1]
    k = max(1, int(round(TOP_PIXELS * n)))
    top = np.partition(pixels, n - k, axis=1)[:, n - k:]  # the k brightest, in place of a sort
    total = pixels.sum(axis=1, dtype=np.float64)
    out = np.where(total > 0, top.sum(axis=1, dtype=np.float64) / np.where(total > 0, total, 1.0), 0.0)
    return out[0] if single else out


def crystallinity(bragg: np.ndarray | float) -> np.ndarray:
    """Logistic map of the Bragg fraction to [0, 1]: 1 / (1 + (BRAGG_CENTRE / bragg) ** BRAGG_SLOPE).

    Examples
    --------
    >>> round(float(crystallinity(0.5)), 3), round(float(crystallinity(0.04)), 3)
    (0.999, 0.001)
    """
    bragg = np.maximum(np.asarray(bragg, dtype=np.float64), 1e-12)
    return 1.0 / (1.0 + (BRAGG_CENTRE / bragg) ** BRAGG_SLOPE)


def score(
    probabilities: np.ndarray, images: np.ndarray, params: DF2D = DF2D(), novelty: np.ndarray | None = None
) -> np.ndarray:
    """Network-and-fingerprint part of the score: P(predicted class) x crystallinity x [novelty <= NOVELTY_LIMIT].

    Parameters
    ----------
    probabilities : numpy.ndarray
        (B, n_classes) class probabilities of the fingerprints.
    images : numpy.ndarray
        (B, 3, n, n) fingerprints.
    params : DF2D
        Descriptor parameters the fingerprints were made with.
    novelty : numpy.ndarray, optional
        (B,) :meth:`crystalface.model.Model.novelty` of the fingerprints; not used when None.

    Returns
    -------
    numpy.ndarray
        (B,) scores in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> score(np.array([[0.9, 0.1]]), np.zeros((1, 3, 64, 64))).round(6).tolist()  # an empty image is no crystal
    [0.0]
    """
    return _score_of(probabilities, crystallinity(bragg_fraction(images, params)), novelty)


def _score_of(probabilities: np.ndarray, crystal: np.ndarray, novelty: np.ndarray | None = None) -> np.ndarray:
    """:func:`score` from the :func:`crystallinity` of the fingerprints, for a caller that keeps it too."""
    values = np.asarray(probabilities, dtype=np.float64).max(axis=1) * crystal
    if novelty is not None:
        values = np.where(np.asarray(novelty) > NOVELTY_LIMIT, 0.0, values)
    return values


def vacuum_fraction(atoms: Atoms, distance: float = VACUUM_DISTANCE, n_points: int = 512, seed: int = 0) -> float:
    """Fraction of the cell volume farther than ``distance`` nearest-neighbour distances from every atom.

    Estimated on ``n_points`` fixed random points of the cell (Monte Carlo; the same points for the
    same ``seed``). Bulk crystals, with or without vacancies or noise, have none (the largest hole of
    the seven classes, in diamond, is one nearest-neighbour distance); a slab, a molecule or an atom
    in a box has a lot. The nearest-neighbour distance is the median, over up to 64 atoms (a fixed
    random subset of a larger structure), of each atom's distance to its nearest neighbour: the one
    the standard cell measured (:func:`crystalface.cell.standard_cell`), whose tree this reuses.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic structure (three lattice vectors), e.g. one that :func:`crystalface.cell.check_periodic` accepts.
    distance : float
        Threshold in nearest-neighbour distances.
    n_points, seed : int
        Number of Monte-Carlo points and their random seed.

    Examples
    --------
    >>> from ase.build import bulk, fcc111
    >>> vacuum_fraction(bulk("Si", "diamond", a=5.43))
    0.0
    >>> slab = fcc111("Cu", (2, 2, 4), vacuum=10.0, periodic=True)
    >>> vacuum_fraction(slab) > 0.2
    True
    """
    cell = _minkowski_reduced(atoms.cell[:])
    # The standard cell found the nearest-neighbour distance with a tree of the atoms within 1.5
    # mean spacings of the cell (crystalface.cell._neighbours, remembered): that tree gives every
    # distance up to its margin exactly. In a bulk crystal every point's nearest atom is that close
    # (the mean spacing is ~1 nearest-neighbour distance): one small tree settles all. Only the
    # points it leaves open (nothing within the margin: vacuum) are looked up again in a tree padded
    # as far as needed, so the answer is that of the full periodic search.
    neighbours = _neighbours(atoms.positions, cell)
    limit = distance * neighbours.distance
    points = _unit_points(n_points, seed) @ cell
    # First a grid: a point with an atom of the tree in its cube, whose diagonal is shorter than the
    # limit, has one within it (in a bulk crystal ~90 % of the points, settled at a fifth of the cost
    # of their queries); the tree is asked about the others only.
    open_ = ~_near_in_grid(points, neighbours.tree.data, limit)
    far = np.zeros(len(points), dtype=bool)
    if np.any(open_):
        points = points[open_]
        # bounded query: a point with no atom within the limit gets inf, and the search prunes sooner. A
        # distance found is an upper bound of the true one (exact up to the margin), so a point with an
        # atom found within the limit has one; a point without is open only when the limit is beyond the margin.
        # The search may stop at an atom up to twice as far as the nearest (eps=1; 20 % faster): any atom
        # found within the limit settles a point all the same, and the points it leaves open are searched
        # exactly (in a bulk crystal every point has an atom within half the limit: none is left open)
        d = neighbours.tree.query(points, k=1, distance_upper_bound=limit, eps=1.0)[0]
        far_open = d > limit
        if np.any(far_open):
            far_open[far_open] = neighbours.tree.query(points[far_open], k=1, distance_upper_bound=limit)[0] > limit
        if limit > neighbours.margin and np.any(far_open):
            d_far = _padded_tree(neighbours.frac, cell, limit)[0].query(points[far_open], k=1, distance_upper_bound=limit)[0]
            far_open[far_open] = d_far > limit
        far[open_] = far_open
    return float(np.mean(far))


#: Most cubes :func:`_near_in_grid` lays over the points (a byte each); beyond, it settles none.
_MAX_CUBES = 1 << 20


def _near_in_grid(points: np.ndarray, atoms: np.ndarray, limit: float) -> np.ndarray:
    """Which ``points`` (Cartesian, Å) certainly have one of ``atoms`` within ``limit`` (Å): those
    with an atom in the same cube of a grid of side a millionth less than limit / sqrt(3), whose
    diagonal is shorter than the limit, rounding included. False says nothing; all are False where
    the grid over the points would have more than :data:`_MAX_CUBES` cubes (a few atoms in a large
    box), or cube numbers too large to be exact.
    """
    none = np.zeros(len(points), dtype=bool)
    if not (0 < limit < np.inf and len(points)):
        return none
    inverse_side = np.sqrt(3) / (limit * (1 - 1e-6))
    cube = np.floor(np.ascontiguousarray(points.T) * inverse_side)  # (3, points), cube numbers
    if not np.abs(cube).max() < 1e9:
        return none
    lowest = cube.min(axis=1) - 1  # a layer of cubes around the points' ones, holding no point
    shape = cube.max(axis=1) - lowest + 2
    if np.prod(shape) > _MAX_CUBES:
        return none
    at = np.floor(np.ascontiguousarray(atoms.T) * inverse_side) - lowest[:, None]
    # atoms beyond the points' cubes go to that outer layer, where no point looks
    np.fmax(at, 0, out=at)
    np.fmin(at, (shape - 1)[:, None], out=at)
    occupied = np.zeros(tuple(shape.astype(np.intp)), dtype=bool)
    occupied[tuple(at.astype(np.intp))] = True
    return occupied[tuple((cube - lowest[:, None]).astype(np.intp))]


@lru_cache(maxsize=8)
def _unit_points(n_points: int, seed: int) -> np.ndarray:
    """The Monte-Carlo points of :func:`vacuum_fraction` in fractional coordinates (drawn once per seed: ~0.1 ms)."""
    points = np.random.default_rng(seed).random((n_points, 3))
    points.setflags(write=False)
    return points


def domain_problem(atoms: Atoms, vacuum: float | None = None) -> str | None:
    """Why a periodic structure lies outside what the model was trained on, or None.

    The training set holds bulk crystals of one element. Mixed species change the scattering factors
    in ways the network never saw (rocksalt NaCl looks like nothing it knows); empty regions wider than
    two nearest-neighbour distances (:func:`vacuum_fraction`) mean a slab, a wire, a molecule or a few
    atoms in a box, not a bulk crystal. ``vacuum`` is that fraction where it was measured already
    (:class:`crystalface.cell.LatticeFound`); it is measured here where None.

    Examples
    --------
    >>> from ase.build import bulk
    >>> domain_problem(bulk("Cu", "fcc", a=3.6)) is None
    True
    >>> domain_problem(bulk("NaCl", "rocksalt", a=5.64))
    'more than one element (Cl, Na): the model knows elemental solids'
    """
    symbols = sorted(chemical_symbols[z] for z in np.unique(atoms.numbers))  # not a list of one symbol per atom
    if len(symbols) > 1:
        return f"more than one element ({', '.join(symbols)}): the model knows elemental solids"
    if vacuum is None:
        vacuum = vacuum_fraction(atoms)
    if vacuum > MAX_VACUUM:
        return (f"{100 * vacuum:.0f} % of the cell is vacuum (farther than {VACUUM_DISTANCE:g} nearest-neighbour "
                "distances from every atom): a slab or a molecule in a box, not a bulk crystal")
    return None


#: The largest number of sites any class has in its primitive cell: larger counts are judged when
#: exact, or above :data:`crystalface.cell._MAX_SITES` (see :func:`basis_problem`).
_MOST_BASIS_SITES = max(max(counts) for counts in BASIS_SITES.values())


def basis_problem(label: str, sites: int | None, fit: str | None = None) -> str | None:
    """Why a crystal with ``sites`` sites in the primitive cell of its lattice cannot be of class ``label``, or None.

    ``fit`` (:data:`crystalface.cell.LATTICE_FITS`, :func:`crystalface.cell.lattice_fit`) says how
    the lattice the standard cell found fits the atoms; None when not known (then the count is
    judged as a count of sites). Judged, whatever the label:

    * ``"none"``: the atoms gather on no clear set of sites of the lattice found (fewer than 90 % of
      them near a site, :func:`crystalface.cell._sites_and_occupancy`): a lattice found on part of
      a hot or molten structure, not the crystal's.
    * an ``"exact"`` count above 4, and any count above 64 (:data:`crystalface.cell._MAX_SITES`):
      a structure that repeats with no lattice finer than a cell of that many atoms: amorphous,
      molten (a hot 32-atom cell in which no lattice is found is its own primitive cell), a
      crystal of no class, or one with a planar defect in every cell (a stacking fault or a twin
      boundary in a periodic supercell: 12 close-packed layers with one fault are a 12-site
      polytype), its fingerprint taken in the frame of that cell.

    and counts of 1-4 against the classes of :data:`crystalface.classes.BASIS_SITES`. Counts of
    5-64 that are not exact are not judged: with most sites vacant the lattice found can be coarser
    than the crystal's, which multiplies the count. A count of None with any other fit is unknown,
    never a problem.

    Examples
    --------
    >>> basis_problem("diam", 2) is None, basis_problem("hex/rh", 4) is None, basis_problem("fcc", 8) is None
    (True, True, True)
    >>> basis_problem("diam", 4)
    'the lattice found has 4 sites per primitive cell; a diam crystal has 2'
    >>> basis_problem("fcc", 32, fit="exact")
    'no lattice finer than a cell of 32 atoms was found (every class has 1-4 per lattice point): amorphous, molten, of no class, or a planar defect in every cell'
    >>> basis_problem("fcc", None, fit="none")
    'the atoms do not sit on the sites of the lattice found: molten, amorphous or strongly disordered'
    """
    if fit not in (None, *LATTICE_FITS):
        raise ValueError(f"fit must be one of {LATTICE_FITS} or None, got {fit!r}")
    if fit == "none":
        return "the atoms do not sit on the sites of the lattice found: molten, amorphous or strongly disordered"
    allowed = BASIS_SITES.get(label)
    if sites is not None and (sites > _MAX_SITES or (fit == "exact" and sites > _MOST_BASIS_SITES)):
        return (f"no lattice finer than a cell of {sites} atoms was found (every class has 1-{_MOST_BASIS_SITES} per "
                "lattice point): amorphous, molten, of no class, or a planar defect in every cell")
    if sites is None or allowed is None or not 1 <= sites <= _MOST_BASIS_SITES or sites in allowed:
        return None
    return f"the lattice found has {sites} sites per primitive cell; a {label} crystal has {' or '.join(map(str, allowed))}"


def lattice_problem(label: str, sites: int | None, cubic: str | None, system: str | None = None) -> str | None:
    """Why a label of a non-cubic class contradicts the lattice the standard cell found, or None.

    ``cubic`` is the Bravais type of the lattice found when it is metrically cubic
    (:func:`crystalface.cell.cubic_lattice`, ``info["cubic_lattice"]``; None where it is not, or not
    known) and ``sites`` the sites of its primitive cell. One atom per lattice point has the
    lattice's whole symmetry, so one site on cF, cI or cP is fcc, bcc or sc, and two sites on cF are
    diamond (:data:`crystalface.classes.CUBIC_SIGNATURES`); a label of bct139, bct141 or hex/rh
    there is wrong. The lattice of a periodic input is its box divided by integers, exact however
    hot the crystal: the network has called hot diamond hex/rh and hot bcc bct139 in their MD boxes
    (docs/reliability.md), which this check catches.

    ``system`` is the lattice system of the lattice found (:func:`crystalface.cell.lattice_system`,
    ``info["lattice_system"]``, within 1.5 %; None where not known). A bct crystal's
    lattice is tetragonal, a hex/rh crystal's hexagonal or rhombohedral
    (:data:`crystalface.classes.LATTICE_SYSTEMS`): on an orthorhombic lattice, say, such a label is
    wrong (orthorhombic alpha-U and alpha-Ga, crystals of no class, come out hex/rh); so is hex/rh
    with one or three sites on a hexagonal lattice, where P6_3/mmc has an even number
    (:data:`crystalface.classes.SYSTEM_SITES`; gamma-Se, three sites). A cubic lattice is judged by
    the basis alone (above). Cubic labels are not judged (a strained fcc crystal is fcc to a user, see
    docs/method.md).

    Examples
    --------
    >>> lattice_problem("hex/rh", 2, "cF")
    'the lattice found is cubic (cF) with 2 sites per primitive cell, as in diam; a hex/rh crystal is not cubic'
    >>> lattice_problem("diam", 2, "cF") is None, lattice_problem("bct141", 2, "cI") is None
    (True, True)
    >>> lattice_problem("hex/rh", 2, None, "orthorhombic")
    "the lattice found is orthorhombic; a hex/rh crystal's is hexagonal or rhombohedral"
    >>> lattice_problem("hex/rh", 3, None, "hexagonal"), lattice_problem("hex/rh", 3, None, "rhombohedral")
    ('the lattice found is hexagonal with 3 sites per primitive cell; a hex/rh crystal on a hexagonal lattice has 2 or 4', None)
    """
    cubic_class = CUBIC_SIGNATURES.get((cubic, sites))
    if label in CUBIC_SIGNATURES.values():
        return None
    if cubic_class is not None:
        return (f"the lattice found is cubic ({cubic}) with {sites} site{'s' if sites > 1 else ''} per primitive cell, "
                f"as in {cubic_class}; a {label} crystal is not cubic")
    if system is None or system == "cubic":
        return None
    if system not in LATTICE_SYSTEMS[label]:
        return f"the lattice found is {system}; a {label} crystal's is {' or '.join(LATTICE_SYSTEMS[label])}"
    counts = SYSTEM_SITES.get((label, system))
    if counts is not None and sites is not None and sites <= _MOST_BASIS_SITES and sites not in counts:
        return (f"the lattice found is {system} with {sites} site{'s' if sites > 1 else ''} per primitive cell; "
                f"a {label} crystal on a {system} lattice has {' or '.join(map(str, counts))}")
    return None


def lattice_confirms(label: str, sites: int | None, cubic: str | None) -> bool:
    """Whether the lattice the standard cell found proves the label: one site on a cubic lattice.

    One atom per lattice point has the lattice's whole symmetry, so a crystal whose atoms sit on one
    site of a cF, cI or cP lattice (:func:`crystalface.cell.cubic_lattice`) is fcc, bcc or sc
    whatever its fingerprint looks like. Where the label is that class, a novelty above
    :data:`NOVELTY_LIMIT` does not take the confidence (:func:`assess`): thermal noise moves a hot
    crystal's features away from the pristine training crystals (hot bcc iron at Lindemann 0.06-0.1
    in a third to half of the draws), while the novelty is there for crystals of kinds the model
    never saw, which this one is not. Two sites on cF are not proof of diamond (an alpha-As-type pair
    on a cubic lattice has them too), so only the one-site classes are confirmed. Where the atoms do
    not fold exactly, "one site" means within half a bond of one site: an ordered distortion that
    the lattice search takes for noise (alpha-As near simple cubic, on its pseudo-cubic lattice) has
    one site too, and its pseudo-lattice is cubic to 0.5 % for c/a below ~2.49 (within 1.5 % of
    sqrt(6)), which no element at ambient pressure (As 2.80, Sb and Bi 2.61) and no drawn structure
    (c/a from 2.5) has: of 3500 pristine structures drawn with the robustness test seed 1000, 18
    alpha-As draws have a one-site pseudo-lattice, none of them cubic.

    Examples
    --------
    >>> lattice_confirms("bcc", 1, "cI"), lattice_confirms("fcc", 1, "cI"), lattice_confirms("diam", 2, "cF")
    (True, False, False)
    """
    return sites == 1 and CUBIC_SIGNATURES.get((cubic, 1)) == label


def assess(
    probabilities: np.ndarray,
    images: np.ndarray,
    structures: Sequence[Atoms],
    params: DF2D = DF2D(),
    novelty: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    lattices: Sequence[LatticeFound] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(confident, score)`` of each prediction: the flag and the number reported with every label.

    ``score`` = P(predicted class) x :func:`crystallinity` x [no :func:`domain_problem`] x
    [no :func:`basis_problem`] x [no :func:`lattice_problem`] x [``novelty`` <= NOVELTY_LIMIT or
    :func:`lattice_confirms` the label], in [0, 1]; ``confident`` = ``score >= THRESHOLD``.

    Parameters
    ----------
    probabilities : numpy.ndarray
        (B, n_classes) class probabilities.
    images : numpy.ndarray
        (B, 3, n, n) fingerprints they were computed from.
    structures : sequence of ase.Atoms
        The B periodic input structures.
    params : DF2D
        Descriptor parameters of the fingerprints.
    novelty : numpy.ndarray, optional
        (B,) :meth:`crystalface.model.Model.novelty` of the fingerprints; not used when None.
    labels : sequence of str, optional
        The B predicted class names.
    lattices : sequence of crystalface.cell.LatticeFound, optional
        Per structure, what its standard cell found of its lattice (:func:`crystalface.cell.lattice_found`
        of the standard cell's ``info``; ``compute_fingerprints(..., return_sites=True)`` gives them):
        the sites per primitive cell, how the lattice fits the atoms, its cubic type and its lattice
        system, each None where not known. With ``labels``, they are judged by :func:`basis_problem`,
        :func:`lattice_problem` and :func:`lattice_confirms`; without either, none of them is. Their
        ``vacuum`` fraction, where measured, saves :func:`domain_problem` measuring it again.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from crystalface import Descriptor
    >>> cu = bulk("Cu", "fcc", a=3.6)
    >>> confident, value = assess(np.array([[0.02, 0.98]]), Descriptor()(cu)[None], [cu])
    >>> bool(confident[0]), round(float(value[0]), 2)
    (True, 0.98)
    """
    confident, values, _ = assess_with_reasons(probabilities, images, structures, params, novelty, labels, lattices)
    return confident, values


def assess_with_reasons(
    probabilities: np.ndarray,
    images: np.ndarray,
    structures: Sequence[Atoms],
    params: DF2D = DF2D(),
    novelty: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    lattices: Sequence[LatticeFound] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """:func:`assess`, and for each prediction that is not confident the main reason, in one line (None when confident).

    The reason is the first that applies of: a :func:`domain_problem` (several elements, vacuum), a
    :func:`basis_problem`, a novelty above :data:`NOVELTY_LIMIT` (unless :func:`lattice_confirms` the
    label), the smaller of the two factors of the score where their product is below
    :data:`THRESHOLD` (weak Bragg peaks, the crystallinity, or a hesitating network, P(label)), and
    last a :func:`lattice_problem`: a label the lattice found contradicts is named only where nothing
    else would have made it not confident (a molten cubic crystal called hex/rh is molten first).

    Examples
    --------
    >>> from ase.build import bulk
    >>> from crystalface import Descriptor
    >>> nacl = bulk("NaCl", "rocksalt", a=5.64)
    >>> assess_with_reasons(np.array([[0.01, 0.99]]), Descriptor()(nacl)[None], [nacl])[2]
    ['more than one element (Cl, Na): the model knows elemental solids']
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    vacuums = [None] * len(structures) if lattices is None else [f.vacuum for f in lattices]
    problems = [domain_problem(a, v) for a, v in zip(structures, vacuums)]
    contradictions: list[str | None] = [None] * len(structures)
    if labels is not None and lattices is not None:
        problems = [p or basis_problem(label, f.sites, f.fit) for p, label, f in zip(problems, labels, lattices)]
        contradictions = [lattice_problem(label, f.sites, f.cubic, f.system) for label, f in zip(labels, lattices)]
        if novelty is not None:  # the novelty does not judge a label the lattice proves
            proven = [lattice_confirms(label, f.sites, f.cubic) for label, f in zip(labels, lattices)]
            novelty = np.where(proven, 0.0, np.asarray(novelty, dtype=np.float64))
    crystal = crystallinity(bragg_fraction(images, params))  # once, for the score and the reasons
    values = _score_of(probabilities, crystal, novelty)
    values = np.where([p is not None or c is not None for p, c in zip(problems, contradictions)], 0.0, values)
    confident = values >= THRESHOLD
    reasons = doubts(probabilities, images, params, novelty, labels, problems, confident, contradictions, crystal)
    return confident, values, reasons


def doubts(probabilities: np.ndarray, images: np.ndarray, params: DF2D = DF2D(), novelty: np.ndarray | None = None,
           labels: Sequence[str] | None = None, problems: Sequence[str | None] | None = None,
           confident: np.ndarray | None = None, contradictions: Sequence[str | None] | None = None,
           crystal: np.ndarray | None = None) -> list[str | None]:
    """The reason of :func:`assess_with_reasons` for each prediction that is not ``confident`` (None for the others).

    ``problems`` are the structure-level reasons already found (domain, basis; None where there is
    none, and for finite clusters, :mod:`crystalface.local`), ``contradictions`` the
    :func:`lattice_problem` of each label (named last); ``confident`` defaults to
    ``score(...) >= THRESHOLD`` where there is neither; ``crystal`` is the :func:`crystallinity` of
    each image where the caller has it (computed here otherwise).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    problems = list(problems) if problems is not None else [None] * len(probabilities)
    contradictions = list(contradictions) if contradictions is not None else [None] * len(probabilities)
    if confident is None:
        clear = np.array([p is None and c is None for p, c in zip(problems, contradictions)], dtype=bool)
        confident = (score(probabilities, images, params, novelty) >= THRESHOLD) & clear
    if crystal is None:  # only where a reason has to be given: the common batch is all confident
        crystal = crystallinity(bragg_fraction(images, params)) if not np.all(confident) else np.ones(len(confident))
    reasons: list[str | None] = []
    for i, sure in enumerate(confident):
        p = float(probabilities[i].max())
        if sure:
            reasons.append(None)
        elif problems[i] is not None:
            reasons.append(problems[i])
        elif novelty is not None and novelty[i] > NOVELTY_LIMIT:
            reasons.append(f"novelty {novelty[i]:.2f} above {NOVELTY_LIMIT:g}: unlike every crystal the model was trained on")
        elif contradictions[i] is not None and crystal[i] * p >= THRESHOLD:
            reasons.append(contradictions[i])
        elif crystal[i] < p:
            reasons.append(f"weak Bragg peaks (crystallinity {crystal[i]:.2f}): amorphous, molten or strongly disordered")
        else:
            name = f"P({labels[i]})" if labels is not None else "P(label)"
            reasons.append(f"the network hesitates: {name} = {p:.2f}")
    return reasons
