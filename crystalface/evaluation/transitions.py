"""Structural transitions the network never saw: the paper's three continuous-path experiments.

A model trained on pristine crystals only is walked along paths between (and away from) its classes:

* **bcc -> sc** (:func:`run_bcc_sc`): the body-centre atoms of a bcc cluster are removed at random, a
  growing fraction at a time, until only the simple-cubic sublattice is left (paper: the prediction
  turns from bcc to sc at about 75 % removed).
* **rhombohedral** (:func:`run_rhombohedral`): the one-atom rhombohedral lattice (A_hR1_166_a, the
  beta-Po prototype) swept in its angle alpha from 110 down to 50 degrees passes through bcc
  (109.47 deg), sc (90 deg) and fcc (60 deg); anywhere else it is hex/rh.
* **amorphous** (:func:`run_amorphous`): Gaussian displacements of standard deviation
  ``L x d_nn`` per Cartesian axis, with the Lindemann parameter L from 0 to 0.4 and d_nn the
  nearest-neighbour distance (SPEC: L = sigma / d_nn); the confidence should collapse where melting
  is usually placed, L ~ 0.1-0.2.

Every experiment builds its finite clusters (SPEC steps 2-4), then scales, fingerprints and
classifies them in batches, in worker processes; each random draw comes from
``SeedSequence(seed, spawn_key=(tag, ...indices))``, so a number does not depend on the workers.
Each writes ``<output>/<name>.json`` (every number behind the plot, the parameters and the model
that produced them) and ``<output>/<name>.png``. Run them as ``crystalface experiment NAME`` (see
:func:`register`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
from ase import Atoms
from ase.geometry import minkowski_reduce
from tqdm.auto import tqdm

from ..confidence import NOVELTY_LIMIT, THRESHOLD as CONFIDENCE_THRESHOLD
from .provenance import machine_info
from .workers import STATE, init_worker
from ..cell import StructureError
from ..defects import displace
from ..fingerprint import fingerprint
from ..scaling import nearest_neighbour_distance

__all__ = [
    "BCC_SC_FRAMES", "EXPERIMENTS", "SPECIAL_ANGLES", "body_centre_mask", "crossing_interval", "first_crossing", "remove_body_centres",
    "rhombohedral_lattice",
    "run_bcc_sc", "run_rhombohedral", "run_amorphous", "register",
]

#: Rhombohedral angles (degrees) at which the hR1 lattice is a cubic lattice, and beta-Po's own.
SPECIAL_ANGLES: dict[str, float] = {
    "bcc": math.degrees(math.acos(-1.0 / 3.0)),  # 109.4712206...
    "sc": 90.0,
    "fcc": 60.0,
}
#: Tags that keep the random streams of the experiments apart.
_TAG_BCC_SC, _TAG_AMORPHOUS = 0xBCC, 0xA30
#: Structures per work unit: one batched fingerprint and one forward pass.
_CHUNK = 32
#: One colour per class in every plot.
_COLOURS = {"bcc": "tab:blue", "bct139": "tab:olive", "bct141": "tab:brown", "diam": "tab:purple",
            "fcc": "tab:green", "hex/rh": "tab:orange", "sc": "tab:red"}


# ---------------------------------------------------------------------------------------------
# Batched classification of clusters, in worker processes


class _Classified(NamedTuple):
    """What :func:`_classify` returns for N clusters, in order (NaN where a cluster failed)."""

    proba: np.ndarray  #: (N, n_classes) class probabilities
    scores: np.ndarray  #: (N,) confidence scores (:func:`crystalface.confidence.score`)
    crystallinity: np.ndarray  #: (N,) :func:`crystalface.confidence.crystallinity` of the fingerprints, a factor of the score
    novelty: np.ndarray  #: (N,) the model's novelty; above NOVELTY_LIMIT the score is 0
    errors: list  #: per cluster None or the one-line error


def _classify_task(builder: Callable, base, items: list) -> _Classified:
    """Build a cluster per item with ``builder(base, item, descriptor)``, then one batched fingerprint + forward pass.

    Returns the probabilities, the confidence score of each prediction (:func:`crystalface.confidence.score`
    with the model's novelty, as predictions have it) and its factors, NaN where a cluster failed,
    and per item None or the error.
    """
    from ..confidence import _score_of, bragg_fraction, crystallinity

    model = STATE["model"]
    descriptor = model.descriptor
    clusters, ok, errors = [], [], []
    for j, item in enumerate(items):
        try:
            # scaled one by one, so that a bad cluster fails alone and not its whole batch
            clusters.append(descriptor.scale(builder(base, item, descriptor)))
            ok.append(j)
            errors.append(None)
        except (StructureError, ValueError) as exc:
            errors.append(str(exc).splitlines()[0] or type(exc).__name__)
    proba = np.full((len(items), len(model.classes)), np.nan)
    scores, crystal, novelty = (np.full(len(items), np.nan) for _ in range(3))
    if clusters:
        images = fingerprint(clusters, descriptor.df2d)
        proba[ok], found = model.predict(images)
        crystal[ok] = crystallinity(bragg_fraction(images, descriptor.df2d))
        scores[ok] = _score_of(proba[ok], crystal[ok], found)
        if found is not None:
            novelty[ok] = found
    return _Classified(proba, scores, crystal, novelty, errors)


def _classify(model, builder: Callable, base, items: Sequence, workers: int, progress: bool, desc: str) -> _Classified:
    """:func:`_classify_task` over ``builder(base, item)`` of every item, in chunks on ``workers`` processes, in order."""
    items = list(items)
    chunks = [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
    bar = tqdm(total=len(items), desc=desc, unit="structure", disable=not progress, leave=False)
    results = []
    if workers <= 1 or len(chunks) <= 1:
        init_worker(model, None)
        for chunk in chunks:
            results.append(_classify_task(builder, base, chunk))
            bar.update(len(chunk))
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=init_worker, initargs=(model, 1)) as pool:
            for chunk, result in zip(chunks, pool.map(_classify_task, [builder] * len(chunks), [base] * len(chunks), chunks)):
                results.append(result)
                bar.update(len(chunk))
    bar.close()
    n = len(model.classes)
    if not results:
        return _Classified(np.zeros((0, n)), *(np.zeros(0) for _ in range(3)), [])
    return _Classified(*(np.concatenate([getattr(r, k) for r in results]) for k in ("proba", "scores", "crystallinity", "novelty")),
                      [e for r in results for e in r.errors])


# ---------------------------------------------------------------------------------------------
# Shared helpers

def first_crossing(x: Sequence[float], y: Sequence[float], level: float = 0.0) -> float | None:
    """The first x at which ``y`` rises above ``level``, linearly interpolated between grid points.

    None if it never does; ``x[0]`` if it is already above there.

    Examples
    --------
    >>> first_crossing([0.0, 0.5, 1.0], [-1.0, -0.5, 0.5])
    0.75
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    above = np.flatnonzero(y > level)
    if len(above) == 0:
        return None
    i = int(above[0])
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    return float(x0 + (x1 - x0) * (level - y0) / (y1 - y0))


def crossing_interval(x: Sequence[float], values: np.ndarray, crossing: Callable | None = None, coverage: float = 0.95,
                      n_boot: int = 2000, seed: int = 0) -> tuple[float | None, float | None]:
    """Bootstrap interval of a crossing point of the mean over realisations: how sure is it?

    ``values[step, realisation, ...]`` are per-realisation numbers (e.g. class probabilities) and
    ``crossing(x, mean)`` finds the point on their mean over realisations (NaN skipped), None when
    there is none; by default :func:`first_crossing` with level 0 (pass ``level - v`` for a fall
    below ``level``). Each of ``n_boot`` replicates redraws the realisations of every step with
    replacement (the steps are independent draws) and finds its crossing; the interval is the
    central ``coverage`` of those crossings (percentile bootstrap). A bound is None where more than
    that share of replicates find none inside ``x``. A step whose redrawn realisations all failed
    (NaN) is left out of that replicate.

    Examples
    --------
    >>> crossing_interval([0.0, 1.0, 2.0], np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]]))
    (0.5, 1.5)
    """
    x = np.asarray(x, float)
    values = np.asarray(values, float)
    crossing = crossing or first_crossing
    steps, realisations = values.shape[:2]
    draw = np.random.default_rng(seed).integers(realisations, size=(n_boot, steps, realisations))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a step whose draw holds only failures: NaN, skipped
        means = np.nanmean(values[np.arange(steps)[None, :, None], draw], axis=2)  # (n_boot, steps, ...)
    ok = np.isfinite(means.reshape(n_boot, steps, -1)).all(axis=2)
    found = (crossing(x[keep], m[keep]) for m, keep in zip(means, ok))
    crossings = np.array([np.inf if c is None else c for c in found])
    tail = (1.0 - coverage) / 2.0
    lo = float(np.quantile(crossings, tail, method="lower"))
    hi = float(np.quantile(crossings, 1.0 - tail, method="higher"))
    return (lo if np.isfinite(lo) else None), (hi if np.isfinite(hi) else None)


#: How the intervals of the crossing points are made (recorded in the results).
_INTERVAL_METHOD = "95 % percentile bootstrap over the realisations of each step (2000 replicates, seeded by seed)"


def _interval(x: np.ndarray, values: np.ndarray, crossing: Callable | None, seed: int) -> list[float | None]:
    """:func:`crossing_interval` at 95 %, rounded as the results are."""
    return [_round(v, 4) for v in crossing_interval(x, values, crossing, seed=seed)]


def _resolve_model(model):
    """(Model, path of its weights or None) from a Model, a path, or None (the shipped model)."""
    from ..model import Model, _default_path, load_model

    if isinstance(model, Model):
        return model, None
    path = Path(model) if model is not None else _default_path()
    return load_model(path), path.with_suffix(".safetensors")


def _model_file(path: Path | None) -> str | None:
    """The weights file as recorded in results: the shipped model by its package path, not this machine's."""
    from ..model import _default_path

    if path is None:
        return None
    if path.resolve() == _default_path().resolve():
        return f"crystalface/models/{path.name} (shipped)"
    return str(path)


def _header(name: str, model, path: Path | None, command: str | None, workers: int) -> dict:

    card = model.card
    return {
        "experiment": name,
        "command": command if command is not None else shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "file": _model_file(path),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest() if path and path.is_file() else card.get("weights_sha256"),
            "validation_accuracy": card.get("validation_accuracy"),
            "trained_on": card.get("trained_on"),
            "dataset_seed": (card.get("dataset") or {}).get("seed"),
        },
        "classes": list(model.classes),
        "descriptor": model.descriptor.to_dict(),
        "machine": {**machine_info(), "workers": workers},
    }


def _summary(proba: np.ndarray, classes: Sequence[str]) -> dict:
    """Per class: mean and std over realisations (axis 1) of (steps, realisations, classes) probabilities."""
    mean, std = np.nanmean(proba, axis=1), np.nanstd(proba, axis=1)
    labels = np.argmax(np.nan_to_num(proba, nan=-1.0), axis=2)
    valid = ~np.isnan(proba).any(axis=2)
    return {
        "mean": {c: _round(mean[:, k]) for k, c in enumerate(classes)},
        "std": {c: _round(std[:, k]) for k, c in enumerate(classes)},
        "label_fraction": {c: _round(((labels == k) & valid).sum(axis=1) / np.maximum(valid.sum(axis=1), 1))
                           for k, c in enumerate(classes)},
    }


def _round(values, digits: int = 6):
    if values is None:
        return None
    if np.ndim(values) == 0:
        return None if not np.isfinite(values) else round(float(values), digits)
    return [None if not np.isfinite(v) else round(float(v), digits) for v in np.asarray(values, float)]


def _write(results: dict, output: str | Path | None, name: str, plot: Callable[[dict, Path], None], start: float) -> dict:
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    if output is not None:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        plot(results, out / f"{name}.png")
        results["total_seconds"] = round(time.perf_counter() - start, 1)  # now including the picture
        (out / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


def _pyplot():
    from ..plotting import _pyplot

    return _pyplot()


def _workers(workers: int | None) -> int:
    return max(1, workers or os.cpu_count() or 1)


def _crystal(name: str):
    from ..examples import REAL_CRYSTALS

    by_name = {c.name: c for c in REAL_CRYSTALS}
    if name not in by_name:
        raise ValueError(f"unknown crystal {name!r}; choose from {list(by_name)}")
    return by_name[name]


# ---------------------------------------------------------------------------------------------
# bcc -> sc

def _cubic_axes(cluster: Atoms) -> tuple[int, np.ndarray]:
    """Centre atom of a bcc cluster and its cubic axes (rows, length a) from its six second neighbours."""
    positions = cluster.positions
    centre = int(np.argmin(np.linalg.norm(positions, axis=1)))
    r = positions - positions[centre]
    dist = np.linalg.norm(r, axis=1)
    nn = dist[dist > 1e-8].min()
    a = 2.0 * nn / math.sqrt(3.0)
    second = np.flatnonzero(np.abs(dist - a) < 0.02 * a)
    if len(second) != 6:
        raise ValueError(f"not a bcc cluster: the centre atom has {len(second)} second neighbours at 2/sqrt(3) x "
                         f"the nearest-neighbour distance, expected 6")
    v1 = r[second[0]]
    orthogonal = [r[j] for j in second[1:] if abs(r[j] @ v1) < 0.05 * a * a]
    if not orthogonal:
        raise ValueError("not a bcc cluster: no two second neighbours are at right angles")
    v2 = orthogonal[0]
    return centre, np.vstack([v1, v2, np.cross(v1, v2) / a])


def body_centre_mask(cluster: Atoms, tol: float = 0.1) -> np.ndarray:
    """Which atoms of a bcc cluster sit at the body centres of the cubic cells whose corners hold its centre atom.

    The six second neighbours of the atom nearest the cluster's origin lie along the cubic axes at
    distance a; in the cubic coordinates they define, corner atoms have integer coordinates and
    body-centre atoms half-integer ones. Works in any orientation (no symmetry finder).

    Parameters
    ----------
    cluster : ase.Atoms
        A pristine bcc cluster (e.g. ``Descriptor().cluster(bulk("Fe", "bcc", a=2.87))``).
    tol : float
        Largest deviation from an integer of twice a cubic coordinate (units of a).

    Returns
    -------
    numpy.ndarray
        Boolean mask, True for body-centre atoms.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from crystalface import Descriptor
    >>> c = Descriptor().cluster(bulk("Fe", "bcc", a=2.87))
    >>> mask = body_centre_mask(c)
    >>> len(c), int(mask.sum())
    (259, 136)
    """
    centre, axes = _cubic_axes(cluster)
    twice = 2.0 * (cluster.positions - cluster.positions[centre]) @ np.linalg.inv(axes)
    nearest = np.round(twice)
    if np.abs(twice - nearest).max() > tol:
        raise ValueError("not a bcc cluster: some atoms are off the bcc lattice")
    odd = nearest.astype(int) % 2 == 1
    if not np.all(odd.all(axis=1) | (~odd).all(axis=1)):
        raise ValueError("not a bcc cluster: some atoms are on faces or edges of the cubic cells")
    return odd.all(axis=1)


def remove_body_centres(atoms: Atoms, body_centres: Sequence[int], fraction: float,
                        seed: int | np.random.Generator | None = 0) -> Atoms:
    """Remove ``round(fraction x len(body_centres))`` of the atoms ``body_centres`` at random; a new structure.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from crystalface import Descriptor
    >>> c = Descriptor().cluster(bulk("Fe", "bcc", a=2.87))
    >>> len(remove_body_centres(c, np.flatnonzero(body_centre_mask(c)), 1.0))
    123
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    body_centres = np.asarray(body_centres, dtype=int)
    rng = np.random.default_rng(seed)
    removed = rng.choice(body_centres, size=int(round(fraction * len(body_centres))), replace=False)
    return atoms[np.setdiff1d(np.arange(len(atoms)), removed)]


#: How the defective structures of the bcc -> sc path meet the pipeline (see :func:`run_bcc_sc`).
BCC_SC_FRAMES: dict[str, str] = {
    "bcc": "the pristine bcc ball cluster in bcc's standard frame (SPEC steps 2-3), atoms removed from that "
           "cluster (step 4); the frame stays bcc's to the end",
    "cubic": "the same clusters rotated into the standard frame of their simple-cubic sublattice, the frame "
             "the pipeline gives the end point (pristine sc)",
    "periodic": "a periodic 5x5x5 cubic supercell (250 atoms) with the body centres removed, then the whole "
                "pipeline: standard_cell decides the frame from the defective structure's translations, and "
                "the ball of ~256 sites of the lattice it found is cut from the supercell repeated (the vacancies "
                "repeat every 5 a)",
}


def _remove_from(base, item, descriptor) -> Atoms:
    atoms, body_centres, periodic = base
    fraction, seed, key = item
    out = remove_body_centres(atoms, body_centres, fraction, np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key)))
    return descriptor.cluster(out) if periodic else out


def _margin(mean: np.ndarray, k: int) -> np.ndarray:
    """P(class k) minus the largest probability of the other classes, per row: > 0 where k is the label."""
    return mean[:, k] - np.delete(mean, k, axis=1).max(axis=1)


def _label_until(x: np.ndarray, mean: np.ndarray, k: int) -> float | None:
    """Where class k, the label at x[0], first stops being the label (interpolated); None if it is not the label at x[0]."""
    margin = _margin(mean, k)
    return None if margin[0] <= 0 else first_crossing(x, -margin)


def _label_from(x: np.ndarray, mean: np.ndarray, k: int) -> float | None:
    """Where class k becomes the label for good, up to x[-1] (interpolated); None if it is not the label at x[-1]."""
    margin = _margin(mean, k)
    if margin[-1] <= 0:
        return None
    i = int(np.flatnonzero(margin <= 0)[-1]) if np.any(margin <= 0) else -1
    if i < 0:
        return float(x[0])
    return float(x[i] + (x[i + 1] - x[i]) * (0 - margin[i]) / (margin[i + 1] - margin[i]))


def _bcc_sc_bases(source, descriptor, frames: Sequence[str]) -> dict:
    """Per frame: (structure, indices of its body-centre atoms, periodic?)."""
    from ..cell import standard_orientation

    cluster = descriptor.cluster(source.primitive())
    bases = {}
    if "bcc" in frames or "cubic" in frames:
        mask = body_centre_mask(cluster)
        bases["bcc"] = (cluster, np.flatnonzero(mask), False)
        _, axes = _cubic_axes(cluster)
        _, rotation = standard_orientation(axes)
        cubic = cluster.copy()
        cubic.positions = cluster.positions @ rotation
        bases["cubic"] = (cubic, np.flatnonzero(mask), False)
    if "periodic" in frames:
        supercell = source.conventional().repeat(5)
        frac = (supercell.get_scaled_positions() * 5) % 1.0
        centres = np.flatnonzero(np.all(np.abs(frac - 0.5) < 1e-6, axis=1))
        bases["periodic"] = (supercell, centres, True)
    return {f: bases[f] for f in frames}


def run_bcc_sc(
    steps: int = 21,
    realisations: int = 30,
    seed: int = 0,
    crystal: str = "Fe",
    frames: Sequence[str] = tuple(BCC_SC_FRAMES),
    model=None,
    output: str | Path | None = "benchmarks/experiments",
    workers: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    """bcc -> sc: remove a growing fraction of the body-centre atoms of a bcc crystal at random.

    The DF-2D fingerprint depends on the orientation of the cluster, and the standard frame of bcc
    (its Niggli-reduced primitive cell) is not that of sc (the cube), so the path is run in each
    of :data:`BCC_SC_FRAMES`: ``bcc`` (the issue's: the bcc cluster, fixed frame), ``cubic`` (the
    same clusters in the sc end point's frame) and ``periodic`` (a periodic supercell through the
    whole pipeline, which picks the frame itself). The same removals (same seeds) are made in the
    ``bcc`` and ``cubic`` frames.

    Parameters
    ----------
    steps
        Fractions removed, evenly from 0 to 1 (default 21: every 5 %).
    realisations
        Random removals per fraction (each from ``SeedSequence(seed, spawn_key=(0xBCC, step, realisation))``).
    seed
        Seed of the removals.
    crystal
        A bcc crystal of :data:`crystalface.examples.REAL_CRYSTALS` (default Fe, a = 2.8665 Å).
    frames
        Any of :data:`BCC_SC_FRAMES` (default all three).
    model
        A :class:`crystalface.Model`, a path to its ``.safetensors`` file, or None for the shipped model.
    output
        Folder for ``bcc-sc.json`` and ``bcc-sc.png``; None writes nothing.
    workers
        Processes (default: all CPUs).

    Returns
    -------
    dict
        The content of bcc-sc.json: ``fractions`` and, per frame in ``frames``, ``n_removed``,
        ``probabilities`` (per class ``mean``, ``std``, ``label_fraction`` per step), ``crossing_fraction``
        (where P(sc) first exceeds P(bcc), interpolated; None if never), ``bcc_until`` (where bcc stops
        being the label of the mean probabilities), ``sc_from`` (where sc becomes the label for good),
        ``interval`` (the 95 % bootstrap interval over the realisations of each of those three,
        :func:`crossing_interval`), ``label_at`` and atom counts; ``crossing_fraction``,
        ``bcc_until``, ``sc_from`` and ``interval`` collect those of every frame.

    Examples
    --------
    >>> r = run_bcc_sc(steps=3, realisations=2, frames=["bcc"], output=None, workers=1, progress=False)  # doctest: +SKIP
    >>> r["frames"]["bcc"]["n_removed"]  # doctest: +SKIP
    [0, 68, 136]
    """
    start = time.perf_counter()
    if steps < 2 or realisations < 1:
        raise ValueError(f"need steps >= 2 and realisations >= 1, got {steps}, {realisations}")
    frames = list(dict.fromkeys(frames))
    if not frames or any(f not in BCC_SC_FRAMES for f in frames):
        raise ValueError(f"frames must be a non-empty subset of {list(BCC_SC_FRAMES)}, got {frames}")
    source = _crystal(crystal)
    if source.label != "bcc":
        raise ValueError(f"crystal {crystal!r} is {source.label}, not bcc")
    model, path = _resolve_model(model)
    workers = _workers(workers)
    classes = model.classes
    fractions = np.linspace(0.0, 1.0, steps)
    items = [(float(f), seed, (_TAG_BCC_SC, s, r)) for s, f in enumerate(fractions) for r in range(realisations)]
    records = {}
    bcc, sc = classes.index("bcc"), classes.index("sc")
    for frame, base in _bcc_sc_bases(source, model.descriptor, frames).items():
        proba, *_, errors = _classify(model, _remove_from, base, items, workers, progress, f"bcc -> sc ({frame})")
        proba = proba.reshape(steps, realisations, -1)
        mean = np.nanmean(proba, axis=1)
        atoms, centres, _ = base
        records[frame] = {
            "description": BCC_SC_FRAMES[frame],
            "atoms": len(atoms),
            "body_centre_atoms": len(centres),
            "n_removed": [int(round(f * len(centres))) for f in fractions],
            "probabilities": _summary(proba, classes),
            "crossing_fraction": _round(first_crossing(fractions, mean[:, sc] - mean[:, bcc]), 4),
            "bcc_until": _round(_label_until(fractions, mean, bcc), 4),
            "sc_from": _round(_label_from(fractions, mean, sc), 4),
            # 95 % bootstrap intervals over the realisations
            "interval": {
                "crossing_fraction": _interval(fractions, proba[:, :, sc] - proba[:, :, bcc], None, seed),
                "bcc_until": _interval(fractions, proba, lambda x, m: _label_until(x, m, bcc), seed),
                "sc_from": _interval(fractions, proba, lambda x, m: _label_from(x, m, sc), seed),
            },
            "label_at": {f"{100 * f:g}%": classes[int(np.argmax(m))] for f, m in zip(fractions, mean)},
            "failures": sum(e is not None for e in errors),
        }
    results = {
        **_header("bcc-sc", model, path, command, workers),
        "seed": seed,
        "crystal": {"name": source.name, "symbol": source.symbol, "cellpar": list(source.cellpar)},
        "steps": steps,
        "realisations": realisations,
        "random_stream": f"SeedSequence(seed, spawn_key=({_TAG_BCC_SC}, step, realisation))",
        "fractions": _round(fractions),
        "crossing_fraction": {frame: rec["crossing_fraction"] for frame, rec in records.items()},
        "interval": {frame: rec["interval"] for frame, rec in records.items()},
        "interval_method": _INTERVAL_METHOD,
        "bcc_until": {frame: rec["bcc_until"] for frame, rec in records.items()},
        "sc_from": {frame: rec["sc_from"] for frame, rec in records.items()},
        "paper_crossing_fraction": 0.75,
        "frames": records,
    }
    return _write(results, output, "bcc-sc", plot_bcc_sc, start)


def plot_bcc_sc(results: dict, path: Path) -> None:
    """P(bcc) and P(sc) (mean ± std over realisations) against the fraction of body-centre atoms removed, per frame."""
    plt = _pyplot()
    x = 100 * np.asarray(results["fractions"])
    frames = results["frames"]
    fig, axes = plt.subplots(1, len(frames), figsize=(4.6 * len(frames), 4.0), squeeze=False, sharey=True)
    for ax, (frame, rec) in zip(axes[0], frames.items()):
        p = rec["probabilities"]
        for cls in ("bcc", "sc"):
            m, s = np.asarray(p["mean"][cls], float), np.asarray(p["std"][cls], float)
            ax.plot(x, m, "o-", color=_COLOURS[cls], label=f"P({cls})", ms=3.5)
            ax.fill_between(x, np.clip(m - s, 0, 1), np.clip(m + s, 0, 1), color=_COLOURS[cls], alpha=0.2, lw=0)
        for cls in results["classes"]:
            if cls not in ("bcc", "sc"):  # the classes the path wanders through, named only where they matter
                big = max(p["mean"][cls]) > 0.2
                ax.plot(x, p["mean"][cls], "--", color=_COLOURS.get(cls, "grey"), lw=1, label=f"P({cls})" if big else None)
        if rec["crossing_fraction"] is not None:
            lo, hi = rec["interval"]["crossing_fraction"]
            interval = f" (95 %: {100 * lo:.1f}-{100 * hi:.1f})" if lo is not None and hi is not None else ""
            ax.axvline(100 * rec["crossing_fraction"], color="k", lw=0.8, ls="--",
                       label=f"P(sc) > P(bcc) at {100 * rec['crossing_fraction']:.1f} %{interval}")
        ax.axvspan(74, 76, color="k", alpha=0.08, lw=0, label="paper: ~75 %")
        ax.set_xlabel("body-centre atoms removed (%)")
        ax.set_title(f"{frame} frame ({rec['atoms']} atoms, {rec['body_centre_atoms']} body centres)", fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, loc="center left")
    axes[0, 0].set_ylabel("mean probability")
    fig.suptitle(f"bcc → sc ({results['crystal']['name']}), {results['realisations']} random removals per step; "
                 "model trained on pristine structures only", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Rhombohedral path

def rhombohedral_lattice(alpha: float, nn_distance: float = 3.0, symbol: str = "Po") -> Atoms:
    """The one-atom rhombohedral lattice (hR1, A_hR1_166_a) of angle ``alpha`` (degrees), primitive cell.

    Built by the training set's prototype (:data:`crystalface.dataset.PROTOTYPES` ``["hR1"]``) and
    scaled to the nearest-neighbour distance ``nn_distance`` (Å).

    Examples
    --------
    >>> atoms = rhombohedral_lattice(90.0)
    >>> len(atoms), np.round(atoms.cell.cellpar(), 6).tolist()
    (1, [3.0, 3.0, 3.0, 90.0, 90.0, 90.0])
    """
    from ..dataset import PROTOTYPES

    if not 0.0 < alpha < 120.0:
        raise ValueError(f"the rhombohedral angle must be in (0, 120) degrees, got {alpha}")
    atoms = PROTOTYPES["hR1"].build(symbol, {"alpha_rh": float(alpha)}, True)
    reduced, _ = minkowski_reduce(atoms.cell[:])
    shifts = np.array(np.meshgrid(*[np.arange(-2, 3)] * 3, indexing="ij")).reshape(3, -1).T
    lengths = np.linalg.norm(shifts @ reduced, axis=1)
    atoms.set_cell(atoms.cell[:] * (nn_distance / lengths[lengths > 1e-9].min()), scale_atoms=True)
    return atoms


def _rhombohedral_cluster(base, alpha, descriptor) -> Atoms:
    return descriptor.cluster(rhombohedral_lattice(alpha, *base))


def _angle_grid(n_angles: int, fine_halfwidth: float, fine_step: float, beta_po: float):
    coarse = np.concatenate([np.linspace(110.0, 50.0, n_angles), list(SPECIAL_ANGLES.values()), [beta_po]])
    coarse = np.array(sorted(set(np.round(coarse, 10)), reverse=True))
    # keep the exact special values (rounding above could move them by 1e-11)
    for value in (*SPECIAL_ANGLES.values(), beta_po):
        coarse[np.argmin(np.abs(coarse - value))] = value
    fine = {}
    if fine_halfwidth > 0:
        k = int(round(fine_halfwidth / fine_step))
        for cls, centre in SPECIAL_ANGLES.items():
            fine[cls] = centre + fine_step * np.arange(-k, k + 1)
    return coarse, fine


def _runs(angles: np.ndarray, labels: list[str]) -> list[dict]:
    """Contiguous runs of one label along increasing angle."""
    out = []
    for a, lab in zip(angles, labels):
        if out and out[-1]["label"] == lab:
            out[-1]["max_degrees"] = round(float(a), 6)
            out[-1]["n"] += 1
        else:
            out.append({"label": lab, "min_degrees": round(float(a), 6), "max_degrees": round(float(a), 6), "n": 1})
    return out


def _window(angles: np.ndarray, labels: list[str], cls: str, centre: float) -> dict:
    """The contiguous run of label ``cls`` around ``centre`` on the sorted grid ``angles``."""
    i = int(np.argmin(np.abs(angles - centre)))
    record = {"special_degrees": round(centre, 7), "label_at_special": labels[i]}
    if labels[i] != cls:
        return {**record, "min_degrees": None, "max_degrees": None, "width_degrees": 0.0, "edge_uncertainty_degrees": None,
                "truncated": False}
    lo = hi = i
    while lo > 0 and labels[lo - 1] == cls:
        lo -= 1
    while hi < len(labels) - 1 and labels[hi + 1] == cls:
        hi += 1
    # the true edge lies between the last point in the window and the first outside it
    gaps = [angles[lo] - angles[lo - 1] if lo > 0 else np.nan, angles[hi + 1] - angles[hi] if hi < len(labels) - 1 else np.nan]
    return {
        **record,
        "min_degrees": round(float(angles[lo]), 6),
        "max_degrees": round(float(angles[hi]), 6),
        "width_degrees": round(float(angles[hi] - angles[lo]), 6),
        "edge_uncertainty_degrees": _round(np.nanmax(gaps)) if np.isfinite(gaps).any() else None,
        "truncated": lo == 0 or hi == len(labels) - 1,
    }


def run_rhombohedral(
    n_angles: int = 161,
    fine_halfwidth: float = 3.0,
    fine_step: float = 0.05,
    model=None,
    output: str | Path | None = "benchmarks/experiments",
    workers: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    """The rhombohedral path: classify the hR1 lattice from alpha = 110 down to 50 degrees.

    No randomness: every structure is a pristine lattice (Po, nearest-neighbour distance 3 Å; the
    fingerprint divides the length out).

    Parameters
    ----------
    n_angles
        Evenly spaced angles from 110 to 50 degrees (default 161, 0.375-degree steps); the exact
        special angles 109.4712206 (bcc), 90 (sc), 60 (fcc) and beta-Po's 98.2 are always added.
    fine_halfwidth, fine_step
        A fine scan of ±``fine_halfwidth`` degrees in ``fine_step`` steps around each special angle
        (default ±3 degrees in 0.05-degree steps); 0 turns it off.
    model, output, workers, progress, command
        As for :func:`run_bcc_sc`; files ``rhombohedral.json`` and ``.png``.

    Returns
    -------
    dict
        The content of rhombohedral.json: ``coarse`` and ``fine`` scans (angles, probabilities of every
        class, labels), ``windows`` (per class bcc/sc/fcc: the contiguous range of angles around its
        special angle labelled that class, on the coarse and fine grids together), ``beta_po`` (the
        label at beta-Po's angle), ``runs`` (every contiguous run of one label along the path).

    Examples
    --------
    >>> r = run_rhombohedral(n_angles=9, fine_halfwidth=0, output=None, workers=1, progress=False)  # doctest: +SKIP
    >>> r["windows"]["sc"]["label_at_special"]  # doctest: +SKIP
    'sc'
    """
    from ..dataset import PROTOTYPES

    start = time.perf_counter()
    if n_angles < 2 or fine_halfwidth < 0 or (fine_halfwidth > 0 and not 0 < fine_step <= fine_halfwidth):
        raise ValueError(f"need n_angles >= 2, fine_halfwidth >= 0 and 0 < fine_step <= fine_halfwidth, "
                         f"got {n_angles}, {fine_halfwidth}, {fine_step}")
    model, path = _resolve_model(model)
    workers = _workers(workers)
    classes = model.classes
    beta_po = float(PROTOTYPES["hR1"].references["beta-Po"]["alpha_rh"])
    coarse, fine = _angle_grid(n_angles, fine_halfwidth, fine_step, beta_po)
    all_angles = np.concatenate([coarse, *fine.values()])
    proba, *_, errors = _classify(model, _rhombohedral_cluster, (3.0, "Po"), all_angles, workers, progress, "rhombohedral")
    labels = [classes[int(np.argmax(p))] if np.isfinite(p).all() else "failed" for p in proba]

    def scan(angles, p, lab):
        return {"angles_degrees": _round(angles, 7), "probabilities": {c: _round(p[:, k]) for k, c in enumerate(classes)},
                "labels": lab}

    n_coarse = len(coarse)
    result_fine, offset = {}, n_coarse
    for cls, angles in fine.items():
        result_fine[cls] = scan(angles, proba[offset : offset + len(angles)], labels[offset : offset + len(angles)])
        offset += len(angles)
    # one sorted grid of every angle computed, for the windows
    order = np.argsort(all_angles, kind="stable")
    merged_angles, unique = np.unique(all_angles[order], return_index=True)
    merged_labels = [labels[order[u]] for u in unique]
    windows = {cls: _window(merged_angles, merged_labels, cls, centre) for cls, centre in SPECIAL_ANGLES.items()}
    i_beta = int(np.argmin(np.abs(coarse - beta_po)))
    elsewhere = [lab for a, lab in zip(merged_angles, merged_labels)
                 if not any(w["min_degrees"] is not None and w["min_degrees"] - 1e-5 <= a <= w["max_degrees"] + 1e-5
                            for w in windows.values())]  # the window edges are rounded to 1e-6 degrees
    results = {
        **_header("rhombohedral", model, path, command, workers),
        "prototype": {"name": "hR1", "aflow": PROTOTYPES["hR1"].aflow, "symbol": "Po", "nn_distance_angstrom": 3.0},
        "n_angles": n_angles,
        "fine_halfwidth_degrees": fine_halfwidth,
        "fine_step_degrees": fine_step,
        "special_angles_degrees": {**{c: round(a, 7) for c, a in SPECIAL_ANGLES.items()}, "beta-Po": round(beta_po, 7)},
        "coarse": scan(coarse, proba[:n_coarse], labels[:n_coarse]),
        "fine": result_fine,
        "windows": windows,
        "beta_po": {"angle_degrees": round(beta_po, 7), "label": labels[i_beta],
                    "probabilities": {c: _round(proba[i_beta, k]) for k, c in enumerate(classes)}},
        "hex_rh_fraction_outside_windows": _round(np.mean([lab == "hex/rh" for lab in elsewhere]) if elsewhere else np.nan, 4),
        "runs": _runs(merged_angles, merged_labels),
        "paper": "bcc at 109.47, sc at 90, fcc at 60 degrees and hex/rh elsewhere (sc within a few tenths of a degree)",
        "failures": sum(e is not None for e in errors),
    }
    return _write(results, output, "rhombohedral", plot_rhombohedral, start)


def plot_rhombohedral(results: dict, path: Path) -> None:
    """Every class's probability against the rhombohedral angle, plus a zoom on each special angle's fine scan."""
    plt = _pyplot()
    fine = results["fine"]
    fig = plt.figure(figsize=(10, 6.8 if fine else 4.2))
    grid = fig.add_gridspec(2 if fine else 1, 3, height_ratios=[1.3, 1] if fine else [1])
    ax = fig.add_subplot(grid[0, :])
    x = np.asarray(results["coarse"]["angles_degrees"])
    for cls in results["classes"]:
        ax.plot(x, results["coarse"]["probabilities"][cls], "-", lw=1.4, color=_COLOURS.get(cls), label=cls)
    special = results["special_angles_degrees"]
    for name, angle in special.items():
        ax.axvline(angle, color="k", lw=0.6, ls="--" if name != "beta-Po" else ":")
        ax.text(angle, 1.04, f"{name}\n{angle:.2f}°", ha="center", va="bottom", fontsize=7)
    ax.set_xlim(x.max() + 0.5, x.min() - 0.5)  # the path of the issue: from 110 down to 50 degrees
    ax.set_ylim(-0.02, 1.0)
    ax.set_xlabel("rhombohedral angle α (degrees)")
    ax.set_ylabel("probability")
    ax.legend(fontsize=7, ncol=7, loc="lower center", bbox_to_anchor=(0.5, -0.42 if fine else -0.35))
    for col, (cls, scan) in enumerate(fine.items()):
        a = fig.add_subplot(grid[1, col])
        fx = np.asarray(scan["angles_degrees"])
        for c in (cls, "hex/rh"):
            a.plot(fx, scan["probabilities"][c], "-", color=_COLOURS.get(c), label=f"P({c})")
        w = results["windows"][cls]
        if w["min_degrees"] is not None:
            a.axvspan(w["min_degrees"], w["max_degrees"], color=_COLOURS.get(cls), alpha=0.15,
                      label=f"label {cls}: {w['width_degrees']:.2f}°")
        a.axvline(special[cls], color="k", lw=0.6, ls="--")
        a.set_xlim(fx.max(), fx.min())
        a.set_title(f"around {cls} ({special[cls]:.2f}°)", fontsize=8)
        a.set_xlabel("α (degrees)", fontsize=8)
        a.tick_params(labelsize=7)
        a.legend(fontsize=6.5, loc="center left")
    fig.suptitle("Rhombohedral path (β-Po prototype A_hR1_166_a), model trained on pristine structures only", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Ordered -> amorphous

def _displaced(base, item, descriptor) -> Atoms:
    cluster = base
    sigma, seed, key = item
    return displace(cluster, sigma, seed=np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key)))


def run_amorphous(
    crystals: Sequence[str] | None = None,
    steps: int = 41,
    max_lindemann: float = 0.4,
    realisations: int = 20,
    seed: int = 0,
    model=None,
    output: str | Path | None = "benchmarks/experiments",
    workers: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    """Ordered -> amorphous: Gaussian displacements of sigma = L x d_nn per axis, L from 0 to ``max_lindemann``.

    d_nn is the nearest-neighbour distance of the crystal's pristine cluster (the pipeline's mean
    estimator; for a pristine crystal, the shortest bond). The displacements are made on that cluster.

    Parameters
    ----------
    crystals
        Names from :data:`crystalface.examples.REAL_CRYSTALS` (default: all eight, every class).
    steps
        Lindemann parameters, evenly from 0 to ``max_lindemann`` (default 41: every 0.01).
    realisations
        Random displacements per crystal and step, each from
        ``SeedSequence(seed, spawn_key=(0xA30, crystal, step, realisation))``.
    seed, model, output, workers, progress, command
        As for :func:`run_bcc_sc`; files ``amorphous.json`` and ``.png``.

    Returns
    -------
    dict
        The content of amorphous.json: ``lindemann``; per crystal its ``class``, ``nn_distance_angstrom``,
        ``p_true`` (mean, std), ``accuracy`` (fraction of realisations labelled the true class),
        ``entropy_nats`` and ``entropy_normalised`` (mean predictive entropy, / ln n_classes),
        ``probabilities`` (mean of every class), ``confidence_score`` (mean) with two of its factors,
        ``crystallinity`` (mean) and ``novelty_above_limit`` (fraction of realisations), and
        ``collapse`` (L where mean P(true) falls below 0.5, where the accuracy falls below 0.5, where the normalised entropy exceeds 0.5, where the mean
        confidence score falls below its threshold; None if never) and ``collapse_interval`` (95 %
        bootstrap intervals over the realisations of the P(true) and score crossings,
        :func:`crossing_interval`).

    Examples
    --------
    >>> r = run_amorphous(["Cu"], steps=3, realisations=2, output=None, workers=1, progress=False)  # doctest: +SKIP
    >>> r["crystals"]["Cu"]["class"]  # doctest: +SKIP
    'fcc'
    """
    from ..examples import REAL_CRYSTALS

    start = time.perf_counter()
    if steps < 2 or realisations < 1 or not 0 < max_lindemann <= 1:
        raise ValueError(f"need steps >= 2, realisations >= 1 and 0 < max_lindemann <= 1, "
                         f"got {steps}, {realisations}, {max_lindemann}")
    names = list(crystals) if crystals else [c.name for c in REAL_CRYSTALS]
    sources = [_crystal(n) for n in names]
    model, path = _resolve_model(model)
    workers = _workers(workers)
    classes = model.classes
    lindemann = np.linspace(0.0, max_lindemann, steps)
    per_crystal = {}
    for ci, source in enumerate(sources):
        cluster = model.descriptor.cluster(source.primitive())
        d_nn = nearest_neighbour_distance(cluster, model.descriptor.scaling, model.descriptor.shell_bandwidth)
        items = [(float(L * d_nn), seed, (_TAG_AMORPHOUS, ci, s, r)) for s, L in enumerate(lindemann) for r in range(realisations)]
        proba, scores, crystal, novelty, errors = _classify(model, _displaced, cluster, items, workers, progress,
                                                            f"amorphous {source.name}")
        proba = proba.reshape(steps, realisations, -1)
        mean_score = np.nanmean(scores.reshape(steps, realisations), axis=1)
        true = classes.index(source.label)
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = -np.nansum(np.where(proba > 0, proba * np.log(proba), 0.0), axis=2)  # nats, per realisation
        p_true = proba[:, :, true]
        labels = np.argmax(np.nan_to_num(proba, nan=-1.0), axis=2)
        accuracy = (labels == true).mean(axis=1)
        mean_entropy = entropy.mean(axis=1)
        mean_p = np.nanmean(proba, axis=1)
        collapse = {
            "p_true_below_half": first_crossing(lindemann, 0.5 - np.nanmean(p_true, axis=1)),
            "accuracy_below_half": first_crossing(lindemann, 0.5 - accuracy),
            "entropy_above_half_max": first_crossing(lindemann, mean_entropy / math.log(len(classes)) - 0.5),
            # the prediction's confidence score (crystalface.confidence): P(label) x crystallinity
            "score_below_threshold": first_crossing(lindemann, CONFIDENCE_THRESHOLD - mean_score),
        }
        per_crystal[source.name] = {
            "class": source.label,
            "symbol": source.symbol,
            "cluster_atoms": len(cluster),
            "nn_distance_angstrom": round(d_nn, 6),
            "sigma_angstrom": _round(lindemann * d_nn),
            "p_true": {"mean": _round(np.nanmean(p_true, axis=1)), "std": _round(np.nanstd(p_true, axis=1))},
            "accuracy": _round(accuracy),
            "entropy_nats": _round(mean_entropy),
            "entropy_normalised": _round(mean_entropy / math.log(len(classes))),
            "confidence_score": _round(mean_score),
            # the score's factors besides P(label) (crystalface.confidence.score): the mean crystallinity
            # of the fingerprints, and the fraction of realisations whose novelty sets the score to 0
            "crystallinity": _round(np.nanmean(crystal.reshape(steps, realisations), axis=1)),
            "novelty_above_limit": _round(_fraction_gated(novelty, scores, steps, realisations)),
            "probabilities": {c: _round(mean_p[:, k]) for k, c in enumerate(classes)},
            "label_at": {f"{L:.2f}": classes[int(np.argmax(m))] for L, m in zip(lindemann, mean_p)},
            "collapse": {k: _round(v, 4) for k, v in collapse.items()},
            # 95 % bootstrap intervals over the realisations of the two crossings the paper's claim is about
            "collapse_interval": {
                "p_true_below_half": _interval(lindemann, 0.5 - p_true, None, seed),
                "score_below_threshold": _interval(lindemann, CONFIDENCE_THRESHOLD - scores.reshape(steps, realisations),
                                                   None, seed),
            },
            "collapse_in_melting_range": bool(collapse["p_true_below_half"] is not None
                                              and 0.1 <= collapse["p_true_below_half"] <= 0.2),
            "confidence_collapse_in_melting_range": bool(collapse["score_below_threshold"] is not None
                                                         and 0.1 <= collapse["score_below_threshold"] <= 0.2),
            "failures": sum(e is not None for e in errors),
        }
    results = {
        **_header("amorphous", model, path, command, workers),
        "seed": seed,
        "steps": steps,
        "realisations": realisations,
        "definition": "sigma = L x d_nn is the standard deviation per Cartesian axis (root-mean-square 3D "
                      "displacement sqrt(3) sigma); d_nn is the mean nearest-neighbour distance of the pristine cluster",
        "random_stream": f"SeedSequence(seed, spawn_key=({_TAG_AMORPHOUS}, crystal, step, realisation))",
        "max_entropy_nats": round(math.log(len(classes)), 6),
        "interval_method": _INTERVAL_METHOD,
        "lindemann": _round(lindemann),
        "crystals": per_crystal,
        "paper": "the confidence collapses inside L = 0.1-0.2, where melting is usually placed",
    }
    return _write(results, output, "amorphous", plot_amorphous, start)


def _fraction_gated(novelty: np.ndarray, scores: np.ndarray, steps: int, realisations: int) -> np.ndarray:
    """Per step, the fraction of the classified realisations (a finite score) whose novelty is above
    NOVELTY_LIMIT; 0 for a model without novelty statistics (NaN novelty), NaN where none was classified."""
    ok = np.isfinite(scores).reshape(steps, realisations)
    gated = (np.nan_to_num(novelty, nan=0.0) > NOVELTY_LIMIT).reshape(steps, realisations) & ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return gated.sum(axis=1) / ok.sum(axis=1)


def plot_amorphous(results: dict, path: Path) -> None:
    """Against the Lindemann parameter: the mean probability of the true class, the mean normalised
    predictive entropy, and the mean confidence score (solid) with the crystallinity factor (dashed)."""
    plt = _pyplot()
    x = np.asarray(results["lindemann"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    cmap = plt.get_cmap("tab10")
    for i, (name, rec) in enumerate(results["crystals"].items()):
        style = dict(color=cmap(i % 10), lw=1.4, label=f"{name} ({rec['class']})")
        axes[0].plot(x, rec["p_true"]["mean"], "-", **style)
        axes[1].plot(x, rec["entropy_normalised"], "-", **style)
        axes[2].plot(x, rec["confidence_score"], "-", **style)
        axes[2].plot(x, rec["crystallinity"], "--", color=style["color"], lw=0.9)
    for ax in axes:
        ax.axvspan(0.1, 0.2, color="grey", alpha=0.15, lw=0, label="L = 0.1-0.2 (melting)")
        ax.axhline(0.5, color="k", lw=0.6, ls=":")
        ax.set_xlabel("Lindemann parameter L = σ / d_nn")
        ax.set_xlim(x.min(), x.max())
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("mean probability of the true class")
    axes[1].set_ylabel(f"mean predictive entropy / ln {len(results['classes'])}")
    axes[2].set_ylabel("mean confidence score (dashed: crystallinity)")
    axes[2].legend(fontsize=7, loc="upper right")  # every curve is near 0 there
    fig.suptitle(f"Ordered → amorphous: Gaussian displacements, {results['realisations']} realisations per point",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Command line

#: Experiment name -> (function, one-line help).
EXPERIMENTS: dict[str, tuple[Callable, str]] = {
    "bcc-sc": (run_bcc_sc, "remove the body-centre atoms of a bcc cluster: when does it turn sc?"),
    "rhombohedral": (run_rhombohedral, "sweep the hR1 (beta-Po) angle through bcc, sc and fcc"),
    "amorphous": (run_amorphous, "Gaussian displacements up to Lindemann 0.4: where does the confidence collapse?"),
}


def register(subparsers) -> None:
    """Add ``crystalface experiment bcc-sc | rhombohedral | amorphous`` to the ``experiment`` sub-parsers."""
    from ..cli import positive_int

    def common(p, seed: bool = True):
        p.add_argument("-o", "--output", default="benchmarks/experiments", help="output folder (default benchmarks/experiments)")
        if seed:
            p.add_argument("--seed", type=int, default=0, help="seed of the random defects (default 0)")
        p.add_argument("--model", help="model .safetensors file (default: the shipped model)")
        p.add_argument("--workers", type=positive_int, default=None, help="processes (default: all CPUs)")

    p = subparsers.add_parser("bcc-sc", help=EXPERIMENTS["bcc-sc"][1],
                              description=run_bcc_sc.__doc__.split("\n\n")[0] + " Writes bcc-sc.json and bcc-sc.png.")
    p.add_argument("--steps", type=int, default=21, help="fractions removed, evenly from 0 to 100 %% (default 21)")
    p.add_argument("--realisations", type=int, default=30, help="random removals per fraction (default 30)")
    p.add_argument("--crystal", default="Fe", help="bcc crystal of crystalface.examples.REAL_CRYSTALS (default Fe)")
    p.add_argument("--frames", nargs="+", default=list(BCC_SC_FRAMES), choices=list(BCC_SC_FRAMES),
                   help="orientations of the path (default all; see the module docs)")
    common(p)
    p.set_defaults(func=_cmd, experiment_name="bcc-sc")

    p = subparsers.add_parser("rhombohedral", help=EXPERIMENTS["rhombohedral"][1],
                              description=run_rhombohedral.__doc__.split("\n\n")[0]
                              + " Deterministic (no seed). Writes rhombohedral.json and rhombohedral.png.")
    p.add_argument("--angles", type=int, default=161,
                   help="evenly spaced angles from 110 to 50 degrees, the special angles added (default 161)")
    p.add_argument("--fine-halfwidth", type=float, default=3.0,
                   help="fine scan of ± this many degrees around 109.47, 90 and 60; 0: none (default 3)")
    p.add_argument("--fine-step", type=float, default=0.05, help="step of the fine scan in degrees (default 0.05)")
    common(p, seed=False)
    p.set_defaults(func=_cmd, experiment_name="rhombohedral")

    p = subparsers.add_parser("amorphous", help=EXPERIMENTS["amorphous"][1],
                              description=run_amorphous.__doc__.split("\n\n")[0] + " Writes amorphous.json and amorphous.png.")
    p.add_argument("--crystals", nargs="+", default=None, help="names from REAL_CRYSTALS (default: all eight)")
    p.add_argument("--steps", type=int, default=41, help="Lindemann parameters, evenly from 0 to --max-lindemann (default 41)")
    p.add_argument("--max-lindemann", type=float, default=0.4, help="largest sigma / d_nn (default 0.4)")
    p.add_argument("--realisations", type=int, default=20, help="random displacements per crystal and step (default 20)")
    common(p)
    p.set_defaults(func=_cmd, experiment_name="amorphous")


def _span(interval) -> str:
    """A crossing interval as printed: "lo-hi", with "never" for a bound beyond the scanned range."""
    lo, hi = ("never" if v is None else f"{v:g}" for v in interval)
    return f"{lo}-{hi}"


def _cmd(args) -> int:
    command = shlex.join(["crystalface", *sys.argv[1:]])
    kwargs = dict(model=args.model, output=args.output, workers=args.workers, command=command)
    name = args.experiment_name
    try:
        if name == "bcc-sc":
            r = run_bcc_sc(steps=args.steps, realisations=args.realisations, seed=args.seed, crystal=args.crystal,
                           frames=args.frames, **kwargs)
            for frame, rec in r["frames"].items():
                labels = " ".join(f"{k}:{v}" for k, v in rec["label_at"].items())
                ci = rec["interval"]
                print(f"{frame:8s} P(sc) > P(bcc) from {rec['crossing_fraction']} ({_span(ci['crossing_fraction'])}), "
                      f"bcc until {rec['bcc_until']} ({_span(ci['bcc_until'])}), "
                      f"sc from {rec['sc_from']} ({_span(ci['sc_from'])}; paper: ~0.75); labels {labels}")
        elif name == "rhombohedral":
            r = run_rhombohedral(n_angles=args.angles, fine_halfwidth=args.fine_halfwidth, fine_step=args.fine_step, **kwargs)
            for cls, w in r["windows"].items():
                span = f"{w['min_degrees']}..{w['max_degrees']} deg, width {w['width_degrees']} deg" if w["min_degrees"] is not None else "none"
                print(f"{cls:4s} at {w['special_degrees']:.4f} deg: label {w['label_at_special']}; window {span}")
            print(f"beta-Po ({r['beta_po']['angle_degrees']} deg): {r['beta_po']['label']}")
        else:
            r = run_amorphous(crystals=args.crystals, steps=args.steps, max_lindemann=args.max_lindemann,
                              realisations=args.realisations, seed=args.seed, **kwargs)
            for crystal, rec in r["crystals"].items():
                c, ci = rec["collapse"], rec["collapse_interval"]
                print(f"{crystal:9s} {rec['class']:7s} P(true) < 0.5 at L = {c['p_true_below_half']} "
                      f"({_span(ci['p_true_below_half'])}), score < {CONFIDENCE_THRESHOLD:g} at L = "
                      f"{c['score_below_threshold']} ({_span(ci['score_below_threshold'])}), "
                      f"entropy > half max at L = {c['entropy_above_half_max']}")
    except ValueError as exc:
        print(f"crystalface: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output)
    print(f"wrote {out / (name + '.json')} and {out / (name + '.png')} ({r['total_seconds']:.0f} s)")
    return 0
