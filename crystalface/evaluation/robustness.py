"""Robustness benchmark: the paper's Tables S1/S2 (defective structures) against spglib and moyo.

The claim under test: a model trained on pristine crystals only names the parent class of heavily
defective structures, where symmetry finders fail. The benchmark

1. draws pristine test structures with :func:`crystalface.dataset.generate_structures` — balanced
   over the seven classes, primitive / conventional / supercell inputs in about equal parts,
   randomly rotated — with a seed (default 1000) other than the training set's (default 0). Every
   structure is drawn from ``SeedSequence(seed, spawn_key=(i,))``, so two seeds give disjoint,
   independent streams;
2. computes each structure's pristine ~256-atom ball cluster once (standard cell + cluster) and, for
   every defect level, makes the defects *on that cluster* (SPEC step 4): vacancies first, then
   Gaussian displacements, from ``SeedSequence(seed, spawn_key=(DEFECT_TAG, i, vacancy ppm,
   sigma in µÅ))`` — the same defects whatever other levels or structures a run holds;
3. scales, fingerprints and classifies the defective clusters in batches;
4. for the first ``baseline_per_class`` structures of each class, builds a periodic ~256-atom
   supercell of the same pristine structure, makes the same kind and level of defects on it (same
   seeding) and asks spglib (tight, medium, loose) and moyo for the space group. A baseline is right
   when that group is one of SPEC's eight and maps to the true class;
5. with method ``crystalface-periodic`` (not in a default run), classifies those same defective
   periodic supercells with the whole pipeline, as a user's file would be: standard cell and cluster
   of the *defective* structure. This tests what steps 2-3 do with defects, which SPEC's protocol
   (defects made after them) leaves out.

Run it as ``crystalface benchmark robustness`` (see :func:`register`) or :func:`run_robustness`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shlex
import sys
import time
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from ase import Atoms
from tqdm.auto import tqdm

from ..cell import StructureError
from .provenance import machine_info
from .workers import STATE, init_worker
from ..classes import CLASSES, class_of_space_group
from ..defects import displace, vacancies
from ..fingerprint import fingerprint
from ..scaling import scale

__all__ = [
    "Level", "METHODS", "DEFAULT_METHODS", "PERIODIC", "BASELINES", "DEFAULT_SIGMAS", "DEFAULT_VACANCIES", "DEFAULT_COMBINED", "PAPER",
    "parse_levels", "default_levels", "defect", "score", "wrong_structures", "baseline_space_group", "run_robustness",
    "write_markdown", "plot_accuracy", "plot_confusion", "register",
]

#: Gaussian displacement levels σ (Å): the paper's, then beyond it.
DEFAULT_SIGMAS: tuple[float, ...] = (0.001, 0.002, 0.003, 0.004, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.10,
                                     0.15, 0.20, 0.25, 0.30)
#: Vacancy levels (%): the paper's, then beyond it.
DEFAULT_VACANCIES: tuple[float, ...] = (1, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 75, 80)
#: Both at once, (vacancies %, σ Å), as in ARISE (Leitherer et al. 2021).
DEFAULT_COMBINED: tuple[tuple[float, float], ...] = ((1, 0.001), (5, 0.01), (10, 0.02), (20, 0.04), (30, 0.08))

#: Symmetry-finder baselines: method -> (library, symprec Å, angle tolerance degrees or None = library default).
#: Tight and loose are ARISE's thresholds; medium is SPEC's middle, with spglib's own angle handling.
BASELINES: dict[str, tuple[str, float, float | None]] = {
    "spglib-tight": ("spglib", 1e-4, 1.0),
    "spglib-medium": ("spglib", 1e-2, None),
    "spglib-loose": ("spglib", 0.1, 5.0),
    "moyopy": ("moyopy", 0.1, None),
}
#: crystalface on the defective periodic supercells the baselines get (the user's path: standard
#: cell and cluster of the defective structure), not on defective clusters of the pristine crystal.
PERIODIC = "crystalface-periodic"
#: Every method the benchmark knows, in table order.
METHODS: tuple[str, ...] = ("crystalface", *BASELINES, PERIODIC)
#: The methods of a default run: all of them. SPEC's protocol for crystalface (defects on the
#: cluster), the finders, and crystalface on the finders' defective periodic supercells (what a
#: user's file holds).
DEFAULT_METHODS: tuple[str, ...] = METHODS

#: Distinguishes the defect streams from the structure draws of generate_structures (spawn_key=(i,)).
DEFECT_TAG = 0xDEF


@dataclass(frozen=True)
class Level:
    """One defect level: a ``vacancy`` fraction (0..1) removed, then Gaussian noise ``sigma`` (Å) per axis.

    Examples
    --------
    >>> Level(vacancy=0.3, sigma=0.08).kind, Level(vacancy=0.3, sigma=0.08).key
    ('combined', 'vac30+sigma0.08')
    """

    vacancy: float = 0.0
    sigma: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.vacancy < 1.0:
            raise ValueError(f"vacancy fraction must be in [0, 1), got {self.vacancy}")
        if not (np.isfinite(self.sigma) and self.sigma >= 0.0):
            raise ValueError(f"sigma must be a finite non-negative number of Å, got {self.sigma}")

    @property
    def kind(self) -> str:
        """"pristine", "displacement", "vacancies" or "combined"."""
        if self.vacancy and self.sigma:
            return "combined"
        return "vacancies" if self.vacancy else "displacement" if self.sigma else "pristine"

    @property
    def percent(self) -> str:
        return f"{100 * self.vacancy:g}"

    @property
    def key(self) -> str:
        """Short identifier, used in results.json and file names: ``sigma0.1``, ``vac50``, ``vac30+sigma0.08``."""
        parts = ([f"vac{self.percent}"] if self.vacancy else []) + ([f"sigma{self.sigma:g}"] if self.sigma else [])
        return "+".join(parts) or "pristine"

    @property
    def label(self) -> str:
        """Human-readable: ``σ = 0.1 Å``, ``50 %``, ``30 % + 0.08 Å``."""
        if self.kind == "combined":
            return f"{self.percent} % + {self.sigma:g} Å"
        return {"pristine": "pristine", "vacancies": f"{self.percent} %", "displacement": f"{self.sigma:g} Å"}[self.kind]


def _numbers(values: Iterable[str | float]) -> list[str]:
    """Flatten ``["0.1,0.2", 0.3]`` into ``["0.1", "0.2", "0.3"]`` (the CLI takes both spaces and commas)."""
    out = []
    for v in values:
        out += [s for s in str(v).replace(",", " ").split() if s]
    return out


def parse_levels(
    sigmas: Iterable[str | float] = (),
    vacancies: Iterable[str | float] = (),
    combined: Iterable[str | tuple[float, float]] = (),
    pristine: bool = True,
) -> list[Level]:
    """Defect levels from their command-line spelling, in the order pristine, σ, vacancies, combined.

    Parameters
    ----------
    sigmas
        Gaussian displacement σ in Å (> 0), e.g. ``["0.01", "0.1"]`` or ``["0.01,0.1"]``.
    vacancies
        Vacancy levels in **percent** (0 < η < 100), e.g. ``["50", "70"]``; a trailing ``%`` is allowed.
    combined
        Pairs ``"PERCENT:SIGMA"`` (vacancies %, σ Å), e.g. ``"30:0.08"``, or tuples ``(30, 0.08)``.
    pristine
        Put the defect-free level first (the hold-out accuracy; every symmetry finder should be right).

    Examples
    --------
    >>> [lv.key for lv in parse_levels(["0.1"], ["50%"], ["30:0.08"])]
    ['pristine', 'sigma0.1', 'vac50', 'vac30+sigma0.08']
    """

    def number(text, what):
        try:
            return float(str(text).strip().rstrip("%"))
        except ValueError:
            raise ValueError(f"{what} must be a number, got {text!r}") from None

    levels = [Level()] if pristine else []
    for s in _numbers(sigmas):
        sigma = number(s, "sigma (Å)")
        if not 0.0 < sigma < 10.0:
            raise ValueError(f"sigma must be in (0, 10) Å, got {s!r}")
        levels.append(Level(sigma=sigma))
    for v in _numbers(vacancies):
        percent = number(v, "vacancy level (%)")
        if not 0.0 < percent < 100.0:
            raise ValueError(f"vacancy levels are percentages in (0, 100), got {v!r}")
        levels.append(Level(vacancy=percent / 100.0))
    for pair in combined:
        if isinstance(pair, str):
            parts = pair.split(":")
            if len(parts) != 2:
                raise ValueError(f"a combined level is PERCENT:SIGMA, e.g. 30:0.08, got {pair!r}")
        else:
            parts = list(pair)
        percent, sigma = number(parts[0], "vacancy level (%)"), number(parts[1], "sigma (Å)")
        if not (0.0 < percent < 100.0 and 0.0 < sigma < 10.0):
            raise ValueError(f"a combined level needs 0 < vacancies < 100 % and 0 < sigma < 10 Å, got {pair!r}")
        levels.append(Level(vacancy=percent / 100.0, sigma=sigma))
    seen = set()
    unique = [lv for lv in levels if not (lv in seen or seen.add(lv))]
    if not unique:
        raise ValueError("no defect level given")
    return unique


def default_levels() -> list[Level]:
    """The issue's 34 levels plus pristine."""
    return parse_levels(DEFAULT_SIGMAS, DEFAULT_VACANCIES, DEFAULT_COMBINED)


def _level_rng(seed: int, index: int, level: Level) -> np.random.Generator:
    key = (DEFECT_TAG, int(index), int(round(level.vacancy * 1e6)), int(round(level.sigma * 1e6)))
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def defect(atoms: Atoms, level: Level, seed: int, index: int) -> Atoms:
    """The defective copy of structure number ``index`` at ``level``: vacancies, then displacements.

    The random stream depends only on ``(seed, index, level)``, so a structure gets the same defects
    in every run, whichever other levels and structures it holds. Works on clusters and periodic cells.

    Examples
    --------
    >>> from ase.build import bulk
    >>> atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(4)
    >>> len(defect(atoms, Level(vacancy=0.25, sigma=0.01), seed=1000, index=0))
    192
    """
    rng = _level_rng(seed, index, level)
    if level.vacancy:
        atoms = vacancies(atoms, level.vacancy, seed=rng)
    if level.sigma:
        atoms = displace(atoms, level.sigma, seed=rng)
    return atoms if (level.vacancy or level.sigma) else atoms.copy()


def score(true: Sequence[str], predicted: Sequence[str | None], classes: Sequence[str] = CLASSES) -> dict:
    """Accuracy, per-class accuracy and confusion matrix of predicted against true classes.

    A prediction that is None or not one of ``classes`` (a failure, or a space group outside the
    eight) is wrong and counted in the confusion matrix's last column, ``"other"``.

    Returns
    -------
    dict
        ``accuracy`` (%), ``accuracy_interval`` (its exact 95 % binomial (Clopper-Pearson) interval
        in %: what the accuracy of the whole population the structures are drawn from may be), ``n``,
        ``correct``, ``per_class`` (class -> {``n``, ``accuracy`` %, None if n = 0}), ``confusion``
        ({``true``: classes, ``predicted``: classes + ["other"], ``matrix``: rows true, columns predicted}).

    Examples
    --------
    >>> s = score(["fcc", "fcc", "bcc"], ["fcc", None, "bcc"], classes=("bcc", "fcc"))
    >>> s["accuracy"], s["accuracy_interval"], s["confusion"]["matrix"]
    (66.667, [9.42, 99.16], [[1, 0, 0], [0, 1, 1]])
    """
    if len(true) != len(predicted):
        raise ValueError(f"{len(true)} true labels but {len(predicted)} predictions")
    classes = list(classes)
    unknown = sorted(set(true) - set(classes))
    if unknown:
        raise ValueError(f"true labels {unknown} are not among the classes {classes}")
    column = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes) + 1), dtype=int)
    for t, p in zip(true, predicted):
        matrix[column[t], column.get(p, len(classes))] += 1
    n_class = matrix.sum(axis=1)
    correct = np.diag(matrix[:, : len(classes)])
    n = int(n_class.sum())
    return {
        "accuracy": round(100.0 * int(correct.sum()) / n, 3) if n else None,
        "accuracy_interval": _accuracy_interval(int(correct.sum()), n),
        "n": n,
        "correct": int(correct.sum()),
        "per_class": {
            c: {"n": int(n_class[i]), "accuracy": round(100.0 * int(correct[i]) / int(n_class[i]), 3) if n_class[i] else None}
            for i, c in enumerate(classes)
        },
        "confusion": {"true": classes, "predicted": classes + ["other"], "matrix": matrix.tolist()},
    }


def _accuracy_interval(correct: int, n: int) -> list[float] | None:
    """Exact (Clopper-Pearson) 95 % interval of a proportion, in %, rounded outwards to 0.01; None for n = 0."""
    if n == 0:
        return None
    from scipy.stats import binomtest  # imported here: scipy.stats takes ~1 s to import, and only scores need it

    ci = binomtest(correct, n).proportion_ci(confidence_level=0.95, method="exact")
    return [math.floor(10000 * ci.low) / 100, math.ceil(10000 * ci.high) / 100]


def wrong_structures(labels: Sequence[str], predicted: dict, infos: Sequence[dict], most: int = 100) -> list[dict]:
    """The structures a method labelled wrongly (or failed on), in index order, at most ``most``.

    ``predicted`` maps the index of every scored structure to its predicted class (None: failed);
    ``labels`` and ``infos`` are the true classes and key-value pairs of the whole test set.

    Each entry: ``index`` in the test set, true ``label``, ``predicted`` (None for a failure), the
    ``prototype``, ``cell_choice`` and free parameters it was drawn with (``c_over_a``, ``x``,
    ``alpha_rh`` where the prototype has them).
    """
    out = []
    for i in sorted(predicted):
        p = predicted[i]
        if p == labels[i]:
            continue
        info = infos[i]
        entry = {"index": i, "label": labels[i], "predicted": p, "prototype": info["prototype"],
                 "cell_choice": info["cell_choice"]}
        entry.update({k: round(float(info[k]), 4) for k in ("c_over_a", "x", "alpha_rh") if k in info})
        out.append(entry)
        if len(out) == most:
            break
    return out


# ---------------------------------------------------------------------------------------------
# Baselines


class _DropMoyoSupercellNote(logging.Filter):
    """moyo warns (through Python logging, logger "moyo") on every supercell input that some primitive
    operations are not integer in the input basis. The baseline cells here are supercells by design and
    the space group is unaffected, so that one note would only print once per structure."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "non-integer rotation matrices" not in record.getMessage()


def _quiet_moyo() -> None:
    logger = logging.getLogger("moyo")
    if not any(isinstance(f, _DropMoyoSupercellNote) for f in logger.filters):
        logger.addFilter(_DropMoyoSupercellNote())


def baseline_space_group(atoms: Atoms, method: str) -> int | None:
    """Space-group number a symmetry finder (:data:`BASELINES`) assigns a periodic structure, or None.

    None when the finder fails or raises. spglib's per-call DeprecationWarning (error handling
    changes in 3.0) is silenced here only.

    Examples
    --------
    >>> from ase.build import bulk
    >>> baseline_space_group(bulk("Cu", "fcc", a=3.6, cubic=True), "spglib-tight")
    225
    """
    try:
        library, symprec, angle = BASELINES[method]
    except KeyError:
        raise ValueError(f"unknown baseline {method!r}; choose from {list(BASELINES)}") from None
    lattice = np.asarray(atoms.cell[:], dtype=float)
    frac = atoms.get_scaled_positions(wrap=True)
    numbers = np.asarray(atoms.numbers)
    try:
        if library == "spglib":
            import spglib

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                dataset = spglib.get_symmetry_dataset(
                    (lattice, frac, numbers), symprec=symprec, angle_tolerance=-1.0 if angle is None else angle
                )
            return None if dataset is None else int(dataset.number)
        import moyopy

        _quiet_moyo()
        cell = moyopy.Cell(lattice.tolist(), frac.tolist(), numbers.tolist())
        kwargs = {} if angle is None else {"angle_tolerance": np.radians(angle)}
        return int(moyopy.MoyoDataset(cell, symprec=symprec, **kwargs).number)
    except Exception:  # noqa: BLE001 - any failure of a finder is a wrong answer, not a crash
        return None


# ---------------------------------------------------------------------------------------------
# Work units (run in worker processes; the model reaches each worker once, by the initialiser)


def _cluster_task(descriptor, items):
    """[(index, atoms)] -> [(index, cluster or None, error or None)], seconds."""
    start = time.perf_counter()
    out = []
    for i, atoms in items:
        try:
            out.append((i, descriptor.cluster(atoms), None))
        except (StructureError, ValueError) as exc:
            out.append((i, None, str(exc).splitlines()[0] or type(exc).__name__))
    return out, time.perf_counter() - start


def _crystalface_task(level: Level, seed: int, items):
    """Defects on each pristine cluster of ``items`` [(index, cluster)], then one batched fingerprint + forward pass."""
    model = STATE["model"]
    descriptor = model.descriptor
    t0 = time.perf_counter()
    indices, clusters, errors = [], [], {}
    for i, c in items:
        try:
            clusters.append(defect(c, level, seed, i))
            indices.append(i)
        except (StructureError, ValueError) as exc:
            errors[i] = str(exc).splitlines()[0]
    t1 = time.perf_counter()
    good, scaled_ok = [], []
    for i, c in zip(indices, clusters):
        try:
            # scaled one by one, so that a bad cluster fails alone and not its whole batch
            scaled_ok.append(descriptor.scale(c))
            good.append(i)
        except (StructureError, ValueError) as exc:
            errors[i] = str(exc).splitlines()[0]
    proba, times = _fingerprint_and_predict(model, scaled_ok)
    return good, proba, errors, {"defects": t1 - t0, **times}


def _periodic_task(level: Level, seed: int, items):
    """Defects on each periodic supercell of ``items`` [(index, atoms)], then the whole pipeline; as _crystalface_task."""
    model = STATE["model"]
    descriptor = model.descriptor
    t0 = time.perf_counter()
    good, scaled_ok, errors = [], [], {}
    for i, cell in items:
        try:
            scaled_ok.append(descriptor.scale(descriptor.cluster(defect(cell, level, seed, i))))
            good.append(i)
        except (StructureError, ValueError) as exc:
            errors[i] = str(exc).splitlines()[0]
    t1 = time.perf_counter()
    proba, times = _fingerprint_and_predict(model, scaled_ok)
    return good, proba, errors, {"cluster": t1 - t0, **times}


def _fingerprint_and_predict(model, scaled: list) -> tuple[np.ndarray, dict]:
    """Class probabilities (float32) of scaled clusters in one batched fingerprint + forward pass, and the two times."""
    t0 = time.perf_counter()
    images = fingerprint(scaled, model.descriptor.df2d) if scaled else None
    t1 = time.perf_counter()
    proba = model.predict_proba(images) if scaled else np.zeros((0, len(model.classes)))
    t2 = time.perf_counter()
    return proba.astype(np.float32), {"fingerprint": t1 - t0, "network": t2 - t1}


def _baseline_task(level: Level, seed: int, methods: Sequence[str], items):
    """Defects on each periodic supercell of ``items`` [(index, atoms)], then every baseline; numbers and seconds."""
    groups = {m: [] for m in methods}
    seconds = dict.fromkeys(methods, 0.0)
    indices = []
    for i, cell in items:
        atoms = defect(cell, level, seed, i)
        indices.append(i)
        for m in methods:
            t = time.perf_counter()
            groups[m].append(baseline_space_group(atoms, m))
            seconds[m] += time.perf_counter() - t
    return indices, groups, seconds


# ---------------------------------------------------------------------------------------------
# Driver


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _model_summary(model, path: Path | None) -> dict:
    card = model.card
    dataset = card.get("dataset") or {}
    shown = path
    if path is not None:
        package = Path(__file__).resolve().parents[1]
        if path.resolve().is_relative_to(package):
            shown = Path("crystalface") / path.resolve().relative_to(package)  # the shipped model, machine-independent
    return {
        "file": str(shown) if shown else None,
        "sha256": _sha256(path) if path and path.is_file() else card.get("weights_sha256"),
        "validation_accuracy": card.get("validation_accuracy"),
        "dataset_seed": dataset.get("seed"),
        "dataset_size": dataset.get("size"),
        "trained_on": card.get("trained_on"),
        "best_epoch": (card.get("training") or {}).get("best_epoch"),
        "crystalface_version": card.get("crystalface_version"),
    }


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class _Executor:
    """Run work units in a process pool (each worker gets the model once) or, with one worker, here."""

    def __init__(self, model, workers: int):
        self.pool = None
        if workers > 1:
            self.pool = ProcessPoolExecutor(max_workers=workers, initializer=init_worker, initargs=(model, 1))
        else:
            init_worker(model, None)

    def run(self, tasks, bars: dict):
        """Yield ``(key, result)`` as the tasks ``(key, function, args, n_structures)`` finish; bar ``key[0]`` counts."""
        if self.pool is None:
            for key, fn, args, n in tasks:
                result = fn(*args)
                bars[key[0]].update(n)
                yield key, result
            return
        futures = {self.pool.submit(fn, *args): (key, n) for key, fn, args, n in tasks}
        for future in as_completed(futures):
            key, n = futures[future]
            bars[key[0]].update(n)
            yield key, future.result()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def _resolve_model(model):
    """(Model, path of its weights or None) from a Model, a path, or None (the shipped model)."""
    from ..model import Model, _default_path, load_model

    if isinstance(model, Model):
        return model, None
    path = Path(model) if model is not None else _default_path()
    return load_model(path), path.with_suffix(".safetensors")


def _draw_test_set(per_class: int, baseline_per_class: int, seed: int, progress: bool):
    """Pristine test structures, their key-value pairs, and the indices of the baseline subsample."""
    from ..dataset import generate_structures

    structures, infos = [], []
    for atoms, info in generate_structures(len(CLASSES) * per_class, seed=seed, progress=progress):
        structures.append(atoms)
        infos.append(info)
    seen: Counter = Counter()
    subsample = []
    for i, info in enumerate(infos):
        if seen[info["label"]] < baseline_per_class:
            subsample.append(i)
        seen[info["label"]] += 1
    return structures, infos, subsample


def _ms(seconds: float, n: int) -> float:
    return round(1e3 * seconds / max(n, 1), 3)


def run_robustness(
    levels: Sequence[Level] | None = None,
    per_class: int = 100,
    baseline_per_class: int = 20,
    seed: int = 1000,
    methods: Sequence[str] = DEFAULT_METHODS,
    model=None,
    output: str | Path | None = "benchmarks/robustness",
    workers: int | None = None,
    chunk_size: int = 50,
    baseline_chunk_size: int = 10,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    """Accuracy of crystalface and of symmetry finders on defective structures, level by level.

    Parameters
    ----------
    levels
        Defect levels (:func:`parse_levels`); default :func:`default_levels` (pristine + the issue's 34).
    per_class
        Test structures per class for crystalface (7 x per_class per level; default 700).
    baseline_per_class
        The first this-many structures of each class (in draw order) also go to the baselines
        (default 140 per level; the finders take up to ~0.5 s on a defective 256-atom cell).
    seed
        Seed of the test structures and their defects. The training set's default is 0; any other
        seed gives a disjoint stream (each structure comes from ``SeedSequence(seed, spawn_key=(i,))``).
        Refused when it equals the model card's training-set seed.
    methods
        Subset of :data:`METHODS`; default :data:`DEFAULT_METHODS` (all of them).
    model
        A :class:`crystalface.Model`, a path to its ``.safetensors`` file, or None for the shipped model.
    output
        Folder for results.json, results.md, accuracy.png and confusion_*.png; None writes nothing.
    workers
        Processes (default: all CPUs); 1 runs everything in this process.
    chunk_size, baseline_chunk_size
        Structures per work unit for crystalface (one batched fingerprint + forward pass) and for the baselines.
    progress
        Show progress bars.
    command
        The command line to record (default: ``sys.argv``).

    Returns
    -------
    dict
        The content of results.json: run parameters, model card summary, test set, timings, machine,
        and per level every method's :func:`score` plus ``ms_per_structure``.

    Examples
    --------
    >>> results = run_robustness(parse_levels(["0.1"], ["50"]), per_class=2, baseline_per_class=1,
    ...                          output=None, workers=1, progress=False)  # doctest: +SKIP
    >>> results["levels"][1]["methods"]["crystalface"]["accuracy"]  # doctest: +SKIP
    100.0
    """
    start = time.perf_counter()
    levels = list(levels) if levels is not None else default_levels()
    methods = list(dict.fromkeys(methods))
    if not methods or any(m not in METHODS for m in methods):
        raise ValueError(f"methods must be a non-empty subset of {list(METHODS)}, got {methods}")
    if per_class < 1 or not 0 <= baseline_per_class <= per_class:
        raise ValueError(f"need per_class >= 1 and 0 <= baseline_per_class <= per_class, got {per_class}, {baseline_per_class}")
    if "moyopy" in methods:
        try:
            import moyopy  # noqa: F401
        except ImportError:
            raise ValueError("method 'moyopy' needs the moyopy package (pip install 'crystalface[baselines]')") from None
    model, model_path = _resolve_model(model)
    summary = _model_summary(model, model_path)
    train_seeds = summary["dataset_seed"] if isinstance(summary["dataset_seed"], list) else [summary["dataset_seed"]]
    if seed in train_seeds:
        raise ValueError(f"seed {seed} is the seed of the model's training set; choose another for test structures")
    descriptor = model.descriptor
    workers = max(1, workers or os.cpu_count() or 1)
    baselines = [m for m in methods if m in BASELINES]
    run_crystalface = "crystalface" in methods
    run_periodic = PERIODIC in methods

    # 1. Pristine test structures (sequential: the class balance depends on the draw order).
    t = time.perf_counter()
    structures, infos, subsample = _draw_test_set(per_class, baseline_per_class, seed, progress)
    labels = [info["label"] for info in infos]
    from ..examples import supercell_near

    supercells = {i: supercell_near(structures[i], 256) for i in subsample} if baselines or run_periodic else {}
    generate_seconds = time.perf_counter() - t

    predicted = [{m: {} for m in methods} for _ in levels]  # level -> method -> {index: class or None}
    errors = [{} for _ in levels]  # level -> {index: crystalface error}
    seconds = [Counter() for _ in levels]  # level -> method (or crystalface/stage) -> worker seconds
    groups = [{m: Counter() for m in baselines} for _ in levels]  # level -> baseline -> space groups found
    with _Executor(model, workers) as executor:
        # 2. The pristine cluster of every structure, once.
        t = time.perf_counter()
        clusters, cluster_errors, cluster_cpu = {}, {}, 0.0
        bars = {"cluster": tqdm(total=len(structures), desc="clusters", unit="structure",
                                disable=not progress or not run_crystalface)}
        tasks = [(("cluster",), _cluster_task, (descriptor, chunk), len(chunk))
                 for chunk in _chunks(list(enumerate(structures)), chunk_size)] if run_crystalface else []
        for _, (out, cpu) in executor.run(tasks, bars):
            cluster_cpu += cpu
            for i, c, err in out:
                if err is None:
                    clusters[i] = c
                else:
                    cluster_errors[i] = err
        bars["cluster"].close()
        cluster_seconds = time.perf_counter() - t

        # 3. Every level: crystalface on the clusters, the baselines on the periodic supercells.
        t = time.perf_counter()
        cluster_items = sorted(clusters.items())
        baseline_items = [(i, supercells[i]) for i in subsample] if baselines or run_periodic else []
        tasks = []
        for li, level in enumerate(levels):
            if run_crystalface:
                tasks += [(("crystalface", li), _crystalface_task, (level, seed, chunk), len(chunk))
                          for chunk in _chunks(cluster_items, chunk_size)]
            if run_periodic:
                tasks += [((PERIODIC, li), _periodic_task, (level, seed, chunk), len(chunk))
                          for chunk in _chunks(baseline_items, chunk_size)]
            if baselines:
                tasks += [(("baseline", li), _baseline_task, (level, seed, baselines, chunk), len(chunk))
                          for chunk in _chunks(baseline_items, baseline_chunk_size)]
        bars = {
            "crystalface": tqdm(total=len(levels) * len(cluster_items) * run_crystalface, desc="crystalface",
                                unit="structure", position=0, disable=not progress or not run_crystalface),
            "baseline": tqdm(total=len(levels) * len(baseline_items), desc="baselines", unit="structure",
                             position=1, disable=not progress or not baselines),
            PERIODIC: tqdm(total=len(levels) * len(baseline_items) * run_periodic, desc=PERIODIC, unit="structure",
                           position=2, disable=not progress or not run_periodic),
        }
        for (kind, li), result in executor.run(tasks, bars):
            if kind == "crystalface":
                good, proba, errs, times = result
                predicted[li]["crystalface"].update((i, model.classes[int(np.argmax(p))]) for i, p in zip(good, proba))
                errors[li].update(errs)
                seconds[li].update({"crystalface/" + stage: s for stage, s in times.items()})
            elif kind == PERIODIC:
                good, proba, errs, times = result
                predicted[li][PERIODIC].update((i, model.classes[int(np.argmax(p))]) for i, p in zip(good, proba))
                errors[li].update({(PERIODIC, i): e for i, e in errs.items()})
                seconds[li][PERIODIC] += sum(times.values())
            else:
                indices, found, secs = result
                for m in baselines:
                    predicted[li][m].update((i, class_of_space_group(g)) for i, g in zip(indices, found[m]))
                    groups[li][m].update(found[m])
                seconds[li].update(secs)
        for bar in bars.values():
            bar.close()
        levels_seconds = time.perf_counter() - t

    # 4. Scores. crystalface is scored on every structure: a failed cluster or fingerprint is wrong.
    level_records = []
    for li, level in enumerate(levels):
        record = {"key": level.key, "label": level.label, "kind": level.kind,
                  "vacancy_percent": round(100 * level.vacancy, 6), "sigma_angstrom": level.sigma, "methods": {}}
        for m in methods:
            indices = range(len(structures)) if m == "crystalface" else subsample
            s = score([labels[i] for i in indices], [predicted[li][m].get(i) for i in indices])
            if m == "crystalface":
                n, sec = len(predicted[li][m]), seconds[li]
                s["ms_per_structure"] = _ms(sec["crystalface/fingerprint"] + sec["crystalface/network"], n)
                s["ms_fingerprint"] = _ms(sec["crystalface/fingerprint"], n)
                s["ms_network"] = _ms(sec["crystalface/network"], n)
                s["ms_defects"] = _ms(sec["crystalface/defects"], n)
                failed = {**cluster_errors, **{i: e for i, e in errors[li].items() if not isinstance(i, tuple)}}
                s["failures"] = len(failed)
                s["failure_examples"] = sorted(set(failed.values()))[:3]
                s["wrong"] = wrong_structures(labels, {i: predicted[li][m].get(i) for i in indices}, infos)
            elif m == PERIODIC:
                s["ms_per_structure"] = _ms(seconds[li][m], len(subsample))
                failed = {i: e for i, e in errors[li].items() if isinstance(i, tuple)}
                s["failures"] = len(failed)
                s["failure_examples"] = sorted(set(failed.values()))[:3]
                s["wrong"] = wrong_structures(labels, {i: predicted[li][m].get(i) for i in indices}, infos)
            else:
                s["ms_per_structure"] = _ms(seconds[li][m], len(subsample))
                s["space_groups"] = {str(g): c for g, c in groups[li][m].most_common(6)}
            record["methods"][m] = s
        record["paper"] = PAPER["paper"].get(level.key)
        if record["paper"] is not None and run_crystalface:
            record["crystalface_meets_paper"] = record["methods"]["crystalface"]["accuracy"] >= record["paper"]
        level_records.append(record)

    total = sum(seconds, Counter())
    n_classified = sum(len(p.get("crystalface", {})) for p in predicted)
    timings = {
        "note": (
            "Per-structure wall time inside one worker process with one torch thread. crystalface: "
            "scale + DF-2D fingerprint + network of a level's defective clusters, each step timed over a "
            f"batch of up to {chunk_size} and divided by the batch size; the pristine standard cell + "
            "cluster is made once per structure (cluster_ms) and the defects on it are timed apart "
            "(defects_ms). Baselines: one get_symmetry_dataset / MoyoDataset call on the defective "
            f"periodic supercell. {PERIODIC}: standard cell + cluster + scale + fingerprint + network of the "
            "defective supercell. With N workers the throughput is about N / time."
        ),
        "methods_ms": {},
        "cluster_ms": _ms(cluster_cpu, len(structures)),
        "generate_seconds": round(generate_seconds, 2),
        "cluster_seconds": round(cluster_seconds, 2),
        "levels_seconds": round(levels_seconds, 2),
    }
    if run_crystalface:
        timings["methods_ms"]["crystalface"] = _ms(total["crystalface/fingerprint"] + total["crystalface/network"], n_classified)
        timings.update({f"{stage}_ms": _ms(total[f"crystalface/{stage}"], n_classified)
                        for stage in ("fingerprint", "network", "defects")})
    timings["methods_ms"].update({m: _ms(total[m], len(levels) * len(subsample)) for m in baselines})
    if run_periodic:
        timings["methods_ms"][PERIODIC] = _ms(total[PERIODIC], len(levels) * len(subsample))

    def cell_choices(indices):
        return dict(sorted(Counter(infos[i]["cell_choice"] for i in indices).items()))

    results = {
        "benchmark": "robustness",
        "command": command if command is not None else shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "per_class": per_class,
        "baseline_per_class": baseline_per_class,
        "n_structures": len(structures),
        "n_baseline_structures": len(subsample) if baselines or run_periodic else 0,
        "methods": methods,
        "baselines": {m: {"library": BASELINES[m][0], "symprec_angstrom": BASELINES[m][1],
                          "angle_tolerance_degrees": BASELINES[m][2]} for m in baselines},
        "model": summary,
        "descriptor": descriptor.to_dict(),
        "test_set": {
            "generator": "crystalface.dataset.generate_structures",
            "seed": seed,
            "class_counts": dict(Counter(labels)),
            "cell_choices": cell_choices(range(len(structures))),
            "cell_choices_per_class": {c: cell_choices([i for i, lab in enumerate(labels) if lab == c]) for c in CLASSES},
            "prototypes": dict(sorted(Counter(info["prototype"] for info in infos).items())),
            "cluster_atoms": _stats([len(c) for c in clusters.values()]),
            "cluster_failures": len(cluster_errors),
            "baseline_subsample": f"the first {baseline_per_class} structures of each class in draw order",
            "baseline_cell_choices": cell_choices(subsample),
            "baseline_supercell_atoms": _stats([len(c) for c in supercells.values()]),
            "defects": ("made on each structure's pristine ball cluster (crystalface) or periodic supercell "
                        "(baselines, crystalface-periodic): vacancies first, then Gaussian displacements, from "
                        f"SeedSequence(seed, spawn_key=({DEFECT_TAG}, index, round(vacancy * 1e6), round(sigma_Å * 1e6)))"),
        },
        "paper": {"reference": "Ziletti et al., Nat. Commun. 9, 2775 (2018), Tables S1/S2, as restated in SPEC.md"},
        "timings": timings,
        "machine": {**machine_info(), "workers": workers},
        "levels": level_records,
    }
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    if output is not None:
        write_outputs(results, output)
        results["total_seconds"] = round(time.perf_counter() - start, 1)  # now including the pictures
        (Path(output) / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


def _stats(values: Sequence[int]) -> dict:
    if not values:
        return {}
    return {"min": int(min(values)), "mean": round(float(np.mean(values)), 1), "max": int(max(values))}


# ---------------------------------------------------------------------------------------------
# Published numbers and reporting

#: SPEC's published accuracies (%), keyed by row then by Level.key. The paper does not give 0.002-0.004 Å,
#: 2 % and 15 %, nor anything combined; the spglib vacancy row is "≤ 0.02" at 1 % (stored as 0.02).
PAPER: dict[str, dict[str, float]] = {
    "paper": {
        "pristine": 100.0,
        **{f"sigma{s:g}": v for s, v in zip((0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.10),
                                            (100, 100, 100, 100, 100, 100, 99.97, 99.91))},
        **{f"vac{p:g}": v for p, v in zip((1, 5, 10, 20, 25, 30, 40, 50, 60, 70),
                                          (100, 100, 100, 100, 100, 100, 100, 99.56, 97.18, 89.05))},
    },
    "paper spglib tight": {f"sigma{s:g}": 0.0 for s in (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.10)},
    "paper spglib medium": {f"sigma{s:g}": (73.7 if s == 0.001 else 0.0) for s in (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.10)},
    "paper spglib loose": {f"sigma{s:g}": {0.001: 99.99, 0.005: 99.99, 0.01: 75.22}.get(s, 0.0)
                           for s in (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.10)},
    "paper spglib (all)": {f"vac{p:g}": (0.02 if p == 1 else 0.0) for p in (1, 5, 10, 20, 25, 30, 40, 50, 60, 70)},
}

_FAMILIES = (("displacement", "Gaussian displacements σ (Å)"), ("vacancies", "Vacancies η"),
             ("combined", "Vacancies + displacements (η, σ)"))


def _fmt(value) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}".rstrip("0").rstrip(".") if value not in (0, 100) else f"{value:g}"


def _span(interval) -> str:
    return "–" if not interval else f"{interval[0]:.2f}-{interval[1]:.2f}"


def _wrong_summary(wrong: list[dict], count: int, listed: int = 5) -> str:
    """The wrong structures of a level in a few words: each one when there are few, else the commonest mistakes."""
    def name(w):
        params = [f"c/a {w['c_over_a']:.3g}" if "c_over_a" in w else None, f"x {w['x']:.3g}" if "x" in w else None,
                  f"α {w['alpha_rh']:.2f}°" if "alpha_rh" in w else None]
        drawn = ", ".join(p for p in params if p)
        return f"{w['prototype']}{f' ({drawn})' if drawn else ''}"

    def arrow(w):
        return w["predicted"] if w["predicted"] is not None else "failed"

    if count <= listed and len(wrong) == count:
        each = Counter(f"{name(w)} → {arrow(w)}" for w in wrong)  # in order of first appearance
        return "; ".join(k + (f" ×{n}" if n > 1 else "") for k, n in each.items())
    kinds = Counter(f"{w['prototype']} → {arrow(w)}" for w in wrong)
    shown = ", ".join(f"{k} ×{n}" for k, n in kinds.most_common(listed))
    more = f" (of the first {len(wrong)})" if len(wrong) < count else ""
    return shown + (", …" if len(kinds) > listed else "") + more


def write_markdown(results: dict) -> str:
    """The Markdown report: one table per defect family (rows methods, then the paper's rows; columns levels)."""
    levels = results["levels"]
    methods = results["methods"]
    n_cf = results["n_structures"]
    n_bl = results["n_baseline_structures"]
    lines = [
        "# Robustness to defects: crystalface against symmetry finders",
        "",
        f"Command: `{results['command']}`",
        "",
        f"{results['date']}, commit `{results['machine'].get('commit')}`, {results['machine']['platform']}, "
        f"{results['machine']['workers']} worker processes; total {results['total_seconds']:.0f} s.",
        "",
        "Accuracy (%) in naming the parent class of defective structures. "
        + (f"crystalface: {n_cf} structures per level ({results['per_class']} per class), defects on the cluster; "
           if "crystalface" in methods else "")
        + (f"{'spglib / moyopy' if any(m in BASELINES for m in methods) else PERIODIC}: the first "
           f"{results['baseline_per_class']} of each class ({n_bl} per level), as periodic ~256-atom supercells "
           "with the same kind of defects. " if n_bl else "")
        + "Test seed "
        f"{results['seed']} (training set: {results['model']['dataset_seed']}). Rows starting with *paper* are "
        "the published numbers (SPEC.md); – = not published."
        + (f" {PERIODIC}: those same defective periodic supercells through the whole pipeline (standard cell and "
           "cluster of the defective structure, as a user's file), where crystalface makes SPEC's defects on the "
           "cluster of the pristine crystal." if PERIODIC in methods else ""),
        "",
        f"Model: `{results['model']['file']}` (sha256 `{str(results['model']['sha256'])[:16]}…`, validation "
        f"accuracy {results['model']['validation_accuracy']}, trained on {results['model']['trained_on']}).",
        "",
    ]
    pristine = [lv for lv in levels if lv["kind"] == "pristine"]
    for kind, title in _FAMILIES:
        family = pristine + [lv for lv in levels if lv["kind"] == kind]
        if len(family) == len(pristine):
            continue
        lines += [f"## {title}", "", "| method | " + " | ".join(lv["label"] for lv in family) + " |",
                  "|---|" + "---:|" * len(family)]
        for m in methods:
            lines.append(f"| {m} | " + " | ".join(_fmt(lv["methods"][m]["accuracy"]) for lv in family) + " |")
        for row, values in PAPER.items():
            cells = [values.get(lv["key"]) for lv in family]
            if any(c is not None for c in cells[len(pristine):]):
                lines.append(f"| *{row}* | " + " | ".join(_fmt(c) for c in cells) + " |")
        lines.append("")
    if "crystalface" in methods:
        lines += ["## crystalface per class (%)", "", "| level | " + " | ".join(CLASSES) + " |",
                  "|---|" + "---:|" * len(CLASSES)]
        for lv in levels:
            pc = lv["methods"]["crystalface"]["per_class"]
            lines.append(f"| {lv['label']} | " + " | ".join(_fmt(pc[c]["accuracy"]) for c in CLASSES) + " |")
        lines.append("")
    compared = [lv for lv in levels if lv.get("crystalface_meets_paper") is not None]
    if compared:
        short = [f"{lv['label']} ({_fmt(lv['methods']['crystalface']['accuracy'])} < {_fmt(lv['paper'])}; "
                 f"95 % interval {_span(lv['methods']['crystalface'].get('accuracy_interval'))})"
                 for lv in compared if not lv["crystalface_meets_paper"]]
        lines += [f"**crystalface against the paper**: at or above it at {len(compared) - len(short)} of "
                  f"{len(compared)} published levels" + (f"; below at {', '.join(short)}." if short else "."), ""]
    explained = False
    for m in (m for m in ("crystalface", PERIODIC) if m in methods):
        wrong = [lv for lv in levels if lv["methods"][m]["correct"] < lv["methods"][m]["n"]]
        if not wrong:
            continue
        lines += [f"## Where {m} is wrong", ""]
        if not explained:
            lines += ["The 95 % interval is the exact binomial (Clopper-Pearson) one: the accuracy of the population "
                      "the test structures are drawn from lies in it with 95 % confidence.", ""]
            explained = True
        lines += ["| level | wrong | accuracy % (95 % interval) | structures (prototype, drawn parameters → predicted) |",
                  "|---|---:|---|---|"]
        for lv in wrong:
            r = lv["methods"][m]
            lines.append(f"| {lv['label']} | {r['n'] - r['correct']} of {r['n']} | {_fmt(r['accuracy'])} "
                         f"({_span(r.get('accuracy_interval'))}) | {_wrong_summary(r.get('wrong', []), r['n'] - r['correct'])} |")
        lines.append("")
    t = results["timings"]
    lines += ["## Time per structure (ms, one process, one thread)", "", "| method | ms |", "|---|---:|"]
    lines += [f"| {m} | {v:.1f} |" for m, v in t["methods_ms"].items()]
    lines += ["", t["note"] + f" Pristine standard cell + cluster: {t['cluster_ms']:.1f} ms per structure.", ""]
    tc = results["test_set"]
    lines += [f"Test set: classes {tc['class_counts']}; cell choices {tc['cell_choices']} (baseline subsample "
              f"{tc['baseline_cell_choices']}); "
              f"cluster atoms {tc['cluster_atoms']}; baseline supercell atoms {tc['baseline_supercell_atoms']}.", ""]
    return "\n".join(lines)


def _figure(nrows: int, ncols: int, size):
    from matplotlib.figure import Figure  # no pyplot: no global state, no window, Agg canvas on save

    fig = Figure(figsize=size)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def plot_accuracy(results: dict, path: str | Path) -> Path:
    """accuracy.png: accuracy against defect level, one line per method, the paper dashed; a panel per family."""
    levels = results["levels"]
    kinds = [k for k, _ in _FAMILIES if any(lv["kind"] == k for lv in levels)]
    fig, axes = _figure(1, max(len(kinds), 1), (5.2 * max(len(kinds), 1), 4.2))
    # distinct markers and line styles: the finders often overlap exactly (all at 0 or 100 %)
    styles = {m: (f"C{i}", "osv^Dx"[i], ("-", "-", "--", ":", "-.", "-")[i]) for i, m in enumerate(METHODS)}
    for ax, kind in zip(axes[0], kinds):
        family = [lv for lv in levels if lv["kind"] == kind]
        if kind == "displacement":
            x, xlabel = [lv["sigma_angstrom"] for lv in family], "σ (Å)"
            ax.set_xscale("log")
        elif kind == "vacancies":
            x, xlabel = [lv["vacancy_percent"] for lv in family], "vacancies (%)"
        else:
            x, xlabel = list(range(len(family))), "vacancies (%) + σ (Å)"
            ax.set_xticks(x, [lv["label"].replace(" + ", "\n") for lv in family], fontsize=8)
        for m in results["methods"]:
            color, marker, line = styles[m]
            ax.plot(x, [lv["methods"][m]["accuracy"] for lv in family], marker=marker, ls=line, ms=4,
                    color=color, alpha=0.85, label=m)
        paper = [(xi, PAPER["paper"].get(lv["key"])) for xi, lv in zip(x, family)]
        paper = [(xi, v) for xi, v in paper if v is not None]
        if paper:
            ax.plot(*zip(*paper), "x--", ms=5, color="black", label="paper (Ziletti 2018)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.set_title(dict(_FAMILIES)[kind])
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_confusion(level: dict, path: str | Path, method: str = "crystalface") -> Path:
    """confusion_<level>.png: row-normalised confusion matrix of one level (counts in the cells)."""
    conf = level["methods"][method]["confusion"]
    matrix = np.asarray(conf["matrix"], dtype=float)
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, axes = _figure(1, 1, (6.0, 5.0))
    ax = axes[0][0]
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(conf["predicted"])), conf["predicted"], rotation=45, ha="right")
    ax.set_yticks(range(len(conf["true"])), conf["true"])
    for (r, c), v in np.ndenumerate(matrix):
        if v:
            ax.text(c, r, f"{int(v)}", ha="center", va="center", fontsize=8, color="white" if rows[r, c] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{method}, {level['label']}: {_fmt(level['methods'][method]['accuracy'])} %")
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def _hardest(levels: list[dict]) -> list[dict]:
    """The last (strongest) level of each defect family."""
    out = {}
    for lv in levels:
        if lv["kind"] != "pristine":
            out[lv["kind"]] = lv
    return list(out.values())


def write_outputs(results: dict, output: str | Path) -> list[Path]:
    """Write results.json, results.md, accuracy.png and confusion_<level>.png (hardest level of each family)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = [output / "results.json", output / "results.md"]
    paths[0].write_text(json.dumps(results, indent=1) + "\n")
    paths[1].write_text(write_markdown(results))
    paths.append(plot_accuracy(results, output / "accuracy.png"))
    if "crystalface" in results["methods"]:
        for lv in _hardest(results["levels"]):
            paths.append(plot_confusion(lv, output / f"confusion_{lv['key'].replace('+', '_')}.png"))
    return paths


# ---------------------------------------------------------------------------------------------
# Command line


def register(subparsers) -> None:
    """Add ``crystalface benchmark robustness`` to the ``benchmark`` sub-parsers."""
    from ..cli import positive_int

    p = subparsers.add_parser(
        "robustness",
        help="accuracy on defective structures against spglib and moyo (paper Tables S1/S2)",
        description=(
            "Accuracy of crystalface, spglib (tight 1e-4 Å / 1°, medium 1e-2 Å, loose 0.1 Å / 5°) and moyopy "
            "(0.1 Å) in naming the parent class of defective structures. Test structures come from "
            "crystalface.dataset.generate_structures with --seed; each structure i is drawn from "
            "SeedSequence(seed, spawn_key=(i,)), so a seed other than the training set's (default 0) gives a "
            "disjoint stream. Writes results.json, results.md, accuracy.png and confusion_*.png into --output."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--sigmas", nargs="*", default=[f"{s:g}" for s in DEFAULT_SIGMAS], metavar="Å",
                   help="Gaussian displacement levels σ in Å (spaces or commas; none: skip)")
    p.add_argument("--vacancies", nargs="*", default=[f"{v:g}" for v in DEFAULT_VACANCIES], metavar="%",
                   help="vacancy levels in percent")
    p.add_argument("--combined", nargs="*", default=[f"{v:g}:{s:g}" for v, s in DEFAULT_COMBINED], metavar="%:Å",
                   help="vacancies and displacements at once, as PERCENT:SIGMA")
    p.add_argument("--per-class", type=int, default=100, help="test structures per class and level for crystalface")
    p.add_argument("--baseline-per-class", type=int, default=20,
                   help="of those, the first N per class also go to spglib and moyopy (slow on defective cells)")
    p.add_argument("--seed", type=int, default=1000,
                   help="seed of the test structures and their defects; the default training set uses 0")
    p.add_argument("-o", "--output", default="benchmarks/robustness", help="output folder")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS, metavar="METHOD",
                   help=f"any of {', '.join(METHODS)} (default: all; {PERIODIC} and the finders run on "
                        "the same subsample of defective periodic supercells)")
    p.add_argument("--model", help="model .safetensors file (default: the shipped model)")
    p.add_argument("--workers", type=positive_int, default=None, help="processes (default: all CPUs)")
    p.set_defaults(func=_cmd_robustness)


def _cmd_robustness(args) -> int:
    from ..model import ModelError

    try:
        levels = parse_levels(args.sigmas, args.vacancies, args.combined)
        results = run_robustness(
            levels, per_class=args.per_class, baseline_per_class=args.baseline_per_class, seed=args.seed,
            methods=args.methods, model=args.model, output=args.output, workers=args.workers,
            command=shlex.join(["crystalface", *sys.argv[1:]]),
        )
    except ModelError:
        raise  # the CLI's main reports it
    except ValueError as exc:
        print(f"crystalface: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'accuracy.png'} ({results['total_seconds']:.0f} s)")
    rows = [(lv["label"], {m: lv["methods"][m]["accuracy"] for m in results["methods"]}) for lv in results["levels"]]
    print("level".ljust(16) + "".join(m.rjust(15) for m in results["methods"]))
    for label, acc in rows:
        print(label.ljust(16) + "".join(_fmt(acc[m]).rjust(15) for m in results["methods"]))
    return 0
