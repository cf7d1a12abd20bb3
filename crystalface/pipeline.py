"""The pipeline from a periodic structure to its fingerprint, as one recipe with its parameters.

    read -> standard_cell -> cluster -> [defects] -> scale -> fingerprint -> network -> prediction

:class:`Descriptor` holds every parameter that changes the fingerprint; a trained model stores it
in its model card, and a model is only ever fed fingerprints made with its own descriptor.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
from ase import Atoms
from tqdm.auto import tqdm

from .cell import LatticeFound, StructureError, atoms_only, lattice_found, standard_cell
from .cluster import _cluster
from .confidence import vacuum_fraction
from .fingerprint import DF2D, fingerprint
from .scaling import LEGACY_SHELL_BANDWIDTH, SCALINGS, SHELL_BANDWIDTH, _check_bandwidth, scale

__all__ = ["Descriptor", "compute_fingerprints"]


@dataclass(frozen=True)
class Descriptor:
    """Every parameter between a periodic structure and its DF-2D fingerprint.

    Parameters
    ----------
    n_atoms : int
        Target size of the finite cluster (paper: 256).
    scaling : str
        Nearest-neighbour distance estimator used for length scaling: "shell" (default: first peak
        of the pair-distance distribution, unbiased under noise and vacancies), "mean" (the paper's
        mean of each atom's shortest distance) or "median".
    shell_bandwidth : float
        Smoothing width of the "shell" estimator, in units of the nearest-neighbour distance
        (:data:`crystalface.scaling.SHELL_BANDWIDTH`). A model card without it was written before
        crystalface 0.1.9, whose estimator used 0.04 (:data:`~crystalface.scaling.LEGACY_SHELL_BANDWIDTH`).
    df2d : DF2D
        Diffraction geometry and image parameters.

    Examples
    --------
    >>> from ase.build import bulk
    >>> Descriptor()(bulk("Cu", "fcc", a=3.6)).shape
    (3, 64, 64)
    """

    n_atoms: int = 256
    scaling: str = "shell"
    shell_bandwidth: float = SHELL_BANDWIDTH
    df2d: DF2D = field(default_factory=DF2D)

    def __post_init__(self):
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {self.scaling!r}")
        _check_bandwidth(self.shell_bandwidth, "shell_bandwidth")
        if self.n_atoms < 32:
            raise ValueError(f"n_atoms must be at least 32, got {self.n_atoms}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Descriptor":
        data = dict(data)
        data["df2d"] = DF2D(**data.get("df2d", {}))
        data.setdefault("shell_bandwidth", LEGACY_SHELL_BANDWIDTH)  # cards written before the field existed
        return cls(**data)

    def cluster(self, atoms: Atoms) -> Atoms:
        """Steps 2-3: standard cell and finite cluster of a periodic structure (Å).

        The ball is the one that holds ``n_atoms`` *sites* of the crystal: a structure with a
        fraction v of its sites vacant (``info["occupancy"]`` = 1 - v of the standard cell) gives a
        cluster of about (1 - v) x ``n_atoms`` atoms, as SPEC makes its defective clusters (atoms
        removed from the pristine ball). Cutting ``n_atoms`` atoms instead would give a ball
        1 / (1 - v)^(1/3) times wider than any the network saw (at half the sites vacant, fcc copper
        comes out fcc 0 times in 10 that way, against 10 in 10 for the ball of the pristine crystal).

        A ball that repeats the cell of a noisy structure gets its displacements dealt out anew
        among the images on each site (see :func:`crystalface.cluster`): a small MD cell then gives
        the ball a large cell of the same crystal gives, not a superlattice of its one pattern of noise.
        """
        # standard_cell has checked the structure, and its result is periodic by construction
        cell = standard_cell(atoms)
        n = max(2, int(round(self.n_atoms * cell.info.get("occupancy", 1.0))))
        return _cluster(cell, n, None)

    def scale(self, cluster: Atoms) -> Atoms:
        """Step 5: the cluster in units of its nearest-neighbour distance, by this descriptor's estimator."""
        return scale(cluster, self.scaling, self.shell_bandwidth)

    def fingerprints(self, clusters: Sequence[Atoms]) -> np.ndarray:
        """Steps 5-6: scale and fingerprint finite clusters, batched: (B, 3, n, n)."""
        return fingerprint([self.scale(c) for c in clusters], self.df2d)

    def __call__(self, atoms: Atoms) -> np.ndarray:
        """Fingerprint of one periodic structure, (3, n, n)."""
        atoms_only(atoms, "Descriptor")
        return self.fingerprints([self.cluster(atoms)])[0]


def _chunk_worker(args) -> tuple[np.ndarray, list[str | None], list[LatticeFound]]:
    descriptor, structures, transform, augment, vacuum = args
    import torch

    torch.set_num_threads(1)  # one process per core; threads would oversubscribe
    return _fingerprint_chunk(descriptor, structures, transform, augment, vacuum)


def _internal_error(exc: BaseException) -> str:
    """One line for an exception no step expected (a bug, or a library failing on odd input)."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"internal error: {type(exc).__name__}: {reason}".rstrip(": ")


def _fingerprint_chunk(descriptor, structures, transform, augment=None,
                       vacuum: bool = False) -> tuple[np.ndarray, list[str | None], list[LatticeFound]]:
    """Images, errors and the :class:`~crystalface.cell.LatticeFound` of each standard cell (see
    :func:`compute_fingerprints`), with the input's vacuum fraction where ``vacuum``."""
    scaled, errors, sites = [], [], []
    for atoms in structures:
        sites.append(LatticeFound())
        try:
            c = descriptor.cluster(atoms)
            sites[-1] = lattice_found(c.info)
            if vacuum:  # now, while the standard cell's neighbour tree of these atoms is remembered
                sites[-1] = sites[-1]._replace(vacuum=vacuum_fraction(atoms))
            if transform is not None:
                c = transform(c)
            # scaled one by one, so that a bad cluster fails alone and not its whole batch
            c = descriptor.scale(c)
            scaled.append(c if augment is None else augment(c))
            errors.append(None)
        except (StructureError, ValueError) as exc:
            errors.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - one structure that breaks a step must not stop the others
            errors.append(_internal_error(exc))
    n = descriptor.df2d.n_pixels
    images = fingerprint(scaled, descriptor.df2d) if scaled else np.zeros((0, 3, n, n), np.float32)
    if len(scaled) == len(structures):  # none failed: the images as they are, not copied into zeros
        return images, errors, sites
    out = np.zeros((len(structures), 3, n, n), np.float32)
    ok = [i for i, e in enumerate(errors) if e is None]
    out[ok] = images
    return out, errors, sites


def compute_fingerprints(
    structures: Sequence[Atoms],
    descriptor: Descriptor = Descriptor(),
    transform: Callable[[Atoms], Atoms] | None = None,
    augment: Callable[[Atoms], Atoms] | None = None,
    workers: int | None = None,
    chunk_size: int = 64,
    progress: bool = False,
    desc: str = "fingerprints",
    return_sites: bool = False,
) -> tuple[np.ndarray, list[str | None]] | tuple[np.ndarray, list[str | None], list[LatticeFound]]:
    """Fingerprints of many periodic structures, in parallel, one failure never stopping the rest.

    Parameters
    ----------
    structures : sequence of ase.Atoms
        Periodic structures (one ase.Atoms is a sequence of one).
    descriptor : Descriptor
        Pipeline parameters.
    transform : callable, optional
        Applied to each cluster before scaling (e.g. defects); must be picklable for workers > 1.
    augment : callable, optional
        Applied to each scaled cluster (e.g. :class:`crystalface.train.ScaleJitter`); picklable too.
    workers : int, optional
        Processes; default the number of CPUs. 1 computes in this process.
    progress : bool
        Show a progress bar.
    return_sites : bool
        Also return, per structure, the :class:`crystalface.cell.LatticeFound` ``(sites, fit, cubic,
        system, vacuum)`` of its standard cell: the sites per primitive cell (``info["sites"]`` of
        :func:`crystalface.cell.standard_cell`; None where unknown or failed), how the lattice found
        fits the atoms (:func:`crystalface.cell.lattice_fit`: "exact", "sites" or "none"; None where
        failed), its cubic Bravais type (None where not cubic), its lattice system
        (:func:`crystalface.cell.lattice_system`) and the vacuum fraction of the input's cell
        (:func:`crystalface.confidence.vacuum_fraction`, measured here, where the standard cell's
        neighbour tree is at hand), as :func:`crystalface.confidence.assess` takes them (``lattices=``).

    Returns
    -------
    (numpy.ndarray, list) or (numpy.ndarray, list, list)
        Images (B, 3, n, n) — zeros where a structure failed — and per structure None or a one-line
        error; with ``return_sites`` the :class:`~crystalface.cell.LatticeFound` records as a third element.

    Examples
    --------
    >>> from ase.build import bulk
    >>> images, errors = compute_fingerprints([bulk("Cu", "fcc", a=3.6), bulk("Fe", "bcc", a=2.87)], workers=1)
    >>> images.shape, errors
    ((2, 3, 64, 64), [None, None])
    """
    structures = atoms_only(structures, "compute_fingerprints", many=True)
    workers = workers or os.cpu_count() or 1
    chunks = [structures[i : i + chunk_size] for i in range(0, len(structures), chunk_size)]
    bar = tqdm(total=len(structures), desc=desc, unit="structure", disable=not progress, leave=False)
    images, errors, sites = [], [], []
    if workers == 1 or len(chunks) <= 1:
        results = (_fingerprint_chunk(descriptor, chunk, transform, augment, return_sites) for chunk in chunks)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_chunk_worker, [(descriptor, c, transform, augment, return_sites) for c in chunks])
    try:
        for (im, err, n_sites), chunk in zip(results, chunks):
            images.append(im)
            errors += err
            sites += n_sites
            bar.update(len(chunk))
    finally:
        if pool is not None:
            pool.shutdown()
    bar.close()
    n = descriptor.df2d.n_pixels
    if len(images) == 1:  # one chunk (as classify_files' chunks are): no copy
        images = images[0]
    else:
        images = np.concatenate(images) if images else np.zeros((0, 3, n, n), np.float32)
    return (images, errors, sites) if return_sites else (images, errors)
