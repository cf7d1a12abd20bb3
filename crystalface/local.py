"""Lattice-free classification: the translation lattice of a finite set of atoms, found from the atoms.

The pipeline of :mod:`crystalface.cell` needs lattice vectors: it finds the translation lattice of a
*periodic* structure and puts the crystal into the standard orientation of that lattice, the
orientation the network was trained in (the DF-2D is orientation-dependent). Reconstructions,
polycrystals and MD snapshots of grains have no lattice vectors. Here the same search runs on a
finite cluster: a difference vector ``t`` between the atom nearest the cluster's centre and one of
its neighbours is a translation when it, and its double, carry most atoms onto atoms (within
``tol``). Only atoms for which ``r + t`` still lies inside the cluster (its convex hull) can be
tested; the score is the fraction of those that land on an atom. The acceptance rules and the choice
of the three shortest independent translations are the periodic search's (``cell._accepted``,
``cell._shortest_basis``). The lattice found is Niggli-reduced and oriented by
:func:`crystalface.cell.standard_orientation`; the cluster, rotated into that frame, is scaled,
fingerprinted and classified by the network as usual.

Species are ignored by the search: it finds the lattice of the *sites* (an ordered alloy such as
L1_0 FePt has the translation lattice of its chemical order, a superlattice of the sites', which
the seven elemental classes do not describe). Nothing here is a symmetry finder: no point operation
is tried.

Measured accuracy on randomly oriented defective clusters: ``benchmarks/lattice_free.md``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms
from ase.geometry import minkowski_reduce
from scipy.spatial import ConvexHull, QhullError, cKDTree

from .cell import StructureError, _accepted, _candidate_translations, _shortest_basis, atoms_only, standard_orientation
from .classify import Prediction
from .confidence import score as confidence_score
from .confidence import THRESHOLD, doubts
from .model import Model, load_model

__all__ = ["local_lattice", "oriented_cluster", "classify_cluster", "classify_clusters"]

#: Candidate translations reach this far from the central atom, in nearest-neighbour distances
#: (the primitive vectors of the seven classes' prototypes are at most ~3.3: dhcp's c).
REACH = 3.5
#: Most candidates tried (after folding t and -t together), shortest first.
MAX_CANDIDATES = 480
#: Candidates are scored in chunks of this many, shortest first; the search stops at the first
#: chunk after which three independent translations are accepted (almost always the first).
CHUNK = 32
#: Translations are scored on at most this many atoms: those nearest the centre, so that near a
#: grain boundary the lattice of the grain at the centre wins.
MAX_SCORED = 96
#: Candidates are the neighbours of this many atoms nearest the centre.
STARTS = 4
#: A candidate (or its double) needs at least this many scored atoms whose image stays in the cluster.
MIN_TESTED = 8
#: Fewer atoms than this are not a crystal fragment the search can work with.
MIN_ATOMS = 16
#: Smallest score of a translation. The periodic search asks for 55 % (more than any sublattice map
#: of a pristine crystal, 50 %); there the lattice may come from the user's pristine cell. Here it
#: comes from the defective atoms, and with a fraction f of them missing a true translation scores
#: about 1 - f: at 50 % vacancies 55 % found no lattice in 57 of 105 clusters. The relative rule
#: (80 % of the best) and the test of 2t still reject sublattice maps, which score half the best.
MIN_SCORE = 0.3
#: Largest tolerance of the Niggli reduction of a measured lattice, relative to the mean squared
#: length of its vectors. The tolerance used is the lattice's own uncertainty, the RMS mismatch of
#: the atoms its vectors carry onto atoms divided by the nearest-neighbour distance, capped here;
#: an exact lattice gets ASE's default (~1e-5), as in the periodic pipeline and in training. Why: the
#: reduced cell of fcc sits on a boundary of the Niggli conditions (all angles 60 degrees), and noise
#: picks another, equally short cell (60/60/90, 90/120/120) that orients the crystal differently; the
#: network then reads fcc as bct139 or hex/rh. A fixed tolerance of 0.08 fixed that (150 of 150
#: windows of the FePt nanoparticle in the training cell, against 62 at 0.005) but moved tI2 lattices
#: near c/a = sqrt(2) off theirs (bct139 pristine: 92 % right, 100 % with the measured tolerance).
NIGGLI_TOLERANCE = 0.08


def _nearest_neighbour(tree: cKDTree) -> float:
    d, _ = tree.query(tree.data, k=2)
    d = d[:, 1]
    return float(np.median(d[d > 1e-8])) if np.any(d > 1e-8) else 0.0


def local_lattice(
    positions: np.ndarray,
    centre: np.ndarray | None = None,
    tol: float | None = None,
) -> np.ndarray | None:
    """Primitive translation lattice of a finite cluster of atoms (no lattice vectors needed), in Å.

    Candidates are the difference vectors from the atom nearest ``centre`` to its neighbours within
    :data:`REACH` nearest-neighbour distances, ``t`` and ``-t`` taken once. A candidate is scored on
    the (up to :data:`MAX_SCORED`) atoms nearest ``centre``: of those whose image ``r + t`` lies
    inside the cluster's convex hull, the fraction that has an atom within ``tol`` of it; the same
    for ``2 t``, and the lower of the two counts. Acceptance and the basis are the periodic search's
    (:func:`crystalface.primitive_lattice`): score above 55 % and at least 80 % of the best, then the
    three shortest independent accepted translations, each refined by the mean mismatch of the atoms
    it carries onto atoms.

    Parameters
    ----------
    positions : numpy.ndarray
        (N, 3) Cartesian positions in Å, in any orientation. Species are not used.
    centre : numpy.ndarray, optional
        Point (Å) whose surroundings define the lattice; default the centroid.
    tol : float, optional
        Matching distance in Å; default a quarter of the median nearest-neighbour distance.

    Returns
    -------
    numpy.ndarray or None
        3 x 3 array of row vectors (Minkowski-reduced), or None when no three independent
        translations are found (an amorphous region, a grain boundary, too few atoms).

    Examples
    --------
    >>> from ase.build import bulk
    >>> from crystalface.examples import random_rotation
    >>> ball = random_rotation(bulk("Cu", "fcc", a=3.6, cubic=True).repeat(5), seed=1)
    >>> lattice = local_lattice(ball.positions)
    >>> round(float(abs(np.linalg.det(lattice))), 2)  # a^3 / 4
    11.66
    """
    return _search(positions, centre, tol)[0]


def _search(positions, centre=None, tol=None) -> tuple[np.ndarray | None, float]:
    """:func:`local_lattice`, and the RMS mismatch (in nearest-neighbour distances) of its basis vectors."""
    positions = np.asarray(positions, dtype=float)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must be an (N, 3) array, got shape {positions.shape}")
    if len(positions) < MIN_ATOMS or not np.all(np.isfinite(positions)):
        return None, 0.0
    tree = cKDTree(positions)
    nn = _nearest_neighbour(tree)
    if not nn > 0:
        return None, 0.0
    tol = 0.25 * nn if tol is None else float(tol)
    centre = positions.mean(axis=0) if centre is None else np.asarray(centre, dtype=float)
    try:
        hull = ConvexHull(positions)
    except QhullError:  # flat or degenerate: no volume to test translations in
        return None, 0.0
    normals, offsets = hull.equations[:, :3], hull.equations[:, 3]

    _, order = tree.query(centre, k=min(MAX_SCORED, len(positions)))
    scored = positions[np.atleast_1d(order)]
    # candidates from the few atoms nearest the centre: one atom may miss a basis vector (and its
    # opposite) to vacancies, several rarely do
    vectors = np.concatenate([positions[tree.query_ball_point(a, REACH * nn)] - a for a in scored[:STARTS]])
    vectors = vectors[np.linalg.norm(vectors, axis=1) > tol]
    if len(vectors) < 3:
        return None, 0.0
    candidates = _candidate_translations(vectors, tol, MAX_CANDIDATES)

    def score(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score of each vector (lower of t and 2t) and the vector refined by the mean mismatch."""
        result = np.ones(len(vectors))
        refined = vectors.copy()
        for multiple in (1, 2):
            points = scored[None, :, :] + multiple * vectors[:, None, :]  # (C, S, 3)
            inside = (points @ normals.T + offsets).max(axis=2) <= 1e-9 * nn
            dist, j = tree.query(points, k=1, distance_upper_bound=tol)
            hit = np.isfinite(dist) & inside
            tested = inside.sum(axis=1)
            fraction = hit.sum(axis=1) / np.maximum(tested, 1)
            if multiple == 1:
                fraction[tested < MIN_TESTED] = 0.0
                mismatch = np.where(hit[..., None], tree.data[np.where(hit, j, 0)] - points, 0.0)
                refined += mismatch.sum(axis=1) / np.maximum(hit.sum(axis=1), 1)[:, None]
            else:
                # a long t whose double leaves the cluster is judged on t alone
                fraction[tested < MIN_TESTED] = 1.0
            result = np.minimum(result, fraction)
        return result, refined

    scores, refined = [], []
    for i in range(0, len(candidates), CHUNK):
        chunk_scores, chunk_refined = score(candidates[i : i + CHUNK])
        # a candidate is one noisy pair vector: score the promising ones again, refined
        again = chunk_scores >= 0.5 * MIN_SCORE
        if np.any(again):
            chunk_scores[again], chunk_refined[again] = score(chunk_refined[again])
        scores.append(chunk_scores)
        refined.append(chunk_refined)
        accepted = _accepted(np.concatenate(scores), MIN_SCORE)
        basis = _shortest_basis(np.concatenate(refined)[accepted])
        if len(basis) == 3:
            break
    if len(basis) < 3:
        return None, 0.0
    basis = np.array(basis)
    # successive minima give a basis of the accepted translations; if one of the shortest is not an
    # integer combination of it, the basis spans a superlattice (a missed short vector): no lattice
    check = np.concatenate(refined)[accepted][:8] @ np.linalg.inv(basis)
    if np.abs(check - np.round(check)).max() > 0.2:
        return None, 0.0
    points = (scored[None, :, :] + basis[:, None, :]).reshape(-1, 3)
    dist, _ = tree.query(points, k=1, distance_upper_bound=tol)
    rms = float(np.sqrt(np.mean(dist[np.isfinite(dist)] ** 2))) / nn if np.isfinite(dist).any() else 0.0
    return np.asarray(minkowski_reduce(basis)[0], dtype=float), rms


def oriented_cluster(
    atoms: Atoms,
    centre: np.ndarray | None = None,
    n_atoms: int = 256,
    tol: float | None = None,
) -> Atoms | None:
    """The cluster in the standard orientation of its own lattice: what the network was trained on.

    Finds :func:`local_lattice`, rotates the atoms by :func:`crystalface.cell.standard_orientation`
    of it and keeps the ``n_atoms`` atoms nearest ``centre`` (a finite ball, as
    :func:`crystalface.cluster` makes from a periodic crystal).

    Parameters
    ----------
    atoms : ase.Atoms
        Finite cluster in any orientation (cell and periodicity are ignored).
    centre : numpy.ndarray, optional
        Point in Å; default the centroid.
    n_atoms : int
        Most atoms kept.
    tol : float, optional
        Matching distance of the lattice search in Å.

    Returns
    -------
    ase.Atoms or None
        Non-periodic cluster centred on ``centre`` (``info["lattice"]`` holds the standard lattice),
        or None when no lattice is found.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from crystalface.examples import random_rotation
    >>> c = oriented_cluster(random_rotation(bulk("Fe", "bcc", a=2.87, cubic=True).repeat(6), seed=3))
    >>> np.round(np.abs(c.info["lattice"]), 3).max(axis=0).tolist()  # bcc primitive lattice, a along x
    [2.485, 2.343, 2.029]
    """
    positions = np.asarray(atoms.positions, dtype=float)
    centre = positions.mean(axis=0) if centre is None else np.asarray(centre, dtype=float)
    lattice, uncertainty = _search(positions, centre, tol)
    if lattice is None:
        return None
    # ASE's eps is a factor of the cube root of the volume, compared with squared lengths
    scale_factor = float(np.mean(np.sum(lattice**2, axis=1))) / abs(np.linalg.det(lattice)) ** (1 / 3)
    eps = max(min(NIGGLI_TOLERANCE, uncertainty) * scale_factor, 1e-5)  # never below ASE's default
    for eps in (eps, max(0.25 * eps, 1e-5), 1e-5):
        try:
            standard, rotation = standard_orientation(lattice, eps=eps)
            break
        except RuntimeError:  # ASE's reduction can cycle when a large tolerance meets a noisy lattice
            continue
    else:
        return None
    rel = positions - centre
    keep = np.argsort(np.einsum("ij,ij->i", rel, rel), kind="stable")[:n_atoms]
    out = Atoms(numbers=atoms.numbers[keep], positions=rel[keep] @ rotation, pbc=False)
    out.info["lattice"] = standard
    out.info["lattice_uncertainty"] = uncertainty
    out.info["rotation"] = rotation  # r_standard = (r - centre) @ rotation
    return out


def classify_clusters(
    clusters: Sequence[Atoms],
    model: Model | None = None,
    centres: Sequence[np.ndarray] | None = None,
) -> list[Prediction]:
    """Classify finite clusters of atoms in any orientation, without lattice vectors, in one batch.

    Each cluster goes through :func:`oriented_cluster` (its own lattice, standard orientation,
    ``model.descriptor.n_atoms`` atoms), length scaling, the fingerprint and the network. The score
    is P(label) x crystallinity of the fingerprint (:func:`crystalface.confidence.score`); the
    domain check of periodic inputs (vacuum, several elements) does not apply to a finite cluster.

    Returns
    -------
    list of Prediction
        One per cluster; ``label`` None and ``error`` set where no lattice was found (not confident).

    Examples
    --------
    >>> from ase.build import bulk
    >>> from crystalface.examples import random_rotation
    >>> si = random_rotation(bulk("Si", "diamond", a=5.43, cubic=True).repeat(4), seed=2)
    >>> classify_clusters([si])[0].label
    'diam'
    """
    clusters = atoms_only(clusters, "classify_clusters", many=True)
    model = model or load_model()
    descriptor = model.descriptor
    centres = [None] * len(clusters) if centres is None else list(centres)
    scaled, errors = [], []
    for atoms, centre in zip(clusters, centres):
        try:
            oriented = oriented_cluster(atoms, centre, descriptor.n_atoms)
            if oriented is None:
                errors.append("no crystal lattice found in the cluster")
                continue
            scaled.append(descriptor.scale(oriented))
            errors.append(None)
        except (StructureError, ValueError) as exc:
            errors.append(str(exc).splitlines()[0])
    return _predictions(model, scaled, errors, clusters)


def _predictions(model: Model, scaled: list[Atoms], errors: list[str | None], clusters) -> list[Prediction]:
    from .fingerprint import fingerprint

    images = fingerprint(scaled, model.descriptor.df2d) if scaled else np.zeros((0, 3, 1, 1))
    proba = model.predict_proba(images) if scaled else np.zeros((0, len(model.classes)))
    values = confidence_score(proba, images, model.descriptor.df2d) if scaled else np.zeros(0)
    labels = [model.classes[int(np.argmax(p))] for p in proba]
    reasons = doubts(proba, images, model.descriptor.df2d, labels=labels, confident=values >= THRESHOLD) if scaled else []
    rows = iter(zip(proba, values, reasons))
    out = []
    for atoms, err in zip(clusters, errors):
        source, index = atoms.info.get("source"), atoms.info.get("index")
        if err is not None:
            out.append(Prediction(label=None, source=source, index=index, error=err, confident=False, score=0.0))
            continue
        p, value, why = next(rows)
        out.append(Prediction(
            label=model.classes[int(np.argmax(p))], probabilities={c: float(v) for c, v in zip(model.classes, p)},
            source=source, index=index, confident=bool(value >= THRESHOLD), score=float(value), reason=why,
        ))
    return out


def classify_cluster(atoms: Atoms, model: Model | None = None, centre: np.ndarray | None = None) -> Prediction:
    """Classify one finite cluster of atoms in any orientation, without lattice vectors.

    See :func:`classify_clusters`. A cluster whose lattice cannot be found gets ``label`` None,
    ``confident`` False and the reason in ``error``.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from crystalface.examples import random_rotation
    >>> classify_cluster(random_rotation(bulk("Mg", "hcp", a=3.21, c=5.21).repeat((6, 6, 4)), seed=5)).label
    'hex/rh'
    """
    return classify_clusters([atoms], model, None if centre is None else [centre])[0]
