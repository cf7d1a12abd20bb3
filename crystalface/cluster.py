"""Step 3 of the pipeline: a finite, non-periodic cluster cut from the periodic crystal.

The paper replicates the standard cell in all three directions until the cluster holds about 256
atoms. We replicate the cell as far as needed and keep the ball of whole coordination shells,
centred on an atom, whose size is closest to the target: a ball is the same set of atoms whichever
cell the crystal was given in, so the fingerprint does not depend on that choice, and its shape
transform is isotropic instead of streaking the diffraction peaks along the faces of a skewed cell.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from ase import Atoms

from .cell import StructureError, _check_periodic, _close_pairs, _cross, _lengths, _wrap, atoms_only

__all__ = ["cluster"]

#: Distances (Å) closer than this are one coordination shell, never cut apart.
_SHELL_GAP = 1e-3


def cluster(atoms: Atoms, n_atoms: int = 256, center: int | None = None, seed: int = 0) -> Atoms:
    """Cut a finite ball of about ``n_atoms`` atoms out of a periodic structure.

    When the ball holds the cell twice over or more and ``atoms`` says on which site of its
    lattice each atom sits and how far it is displaced from it (``arrays["site"]`` and
    ``arrays["displacement"]``, as :func:`crystalface.standard_cell` gives them for a noisy or
    defective supercell), every atom of the ball gets the displacement of a random atom of the ball
    on the same site instead of its own (:func:`_untie_displacements`): the displacements of a small
    simulation cell repeat with its period, those of the crystal it stands for do not.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic structure, usually the output of :func:`crystalface.standard_cell`.
    n_atoms : int
        Target number of atoms (paper: 256; at least 32). The ball holds whole coordination shells,
        so the count is the shell boundary closest to the target.
    center : int, optional
        Index of the atom at the centre. Default: the atom nearest the cell origin, so the result
        does not depend on the order of the atoms.
    seed : int
        Seed of the random assignment of displacements (only used where the ball repeats the cell).

    Returns
    -------
    ase.Atoms
        Non-periodic cluster, centred on the origin, in the orientation of ``atoms``.

    Examples
    --------
    >>> from ase.build import bulk
    >>> len(cluster(bulk("Cu", "fcc", a=3.6), n_atoms=256))  # 13 shells of the fcc lattice
    249
    """
    atoms_only(atoms, "cluster")
    if n_atoms < 32:
        raise ValueError(f"n_atoms must be at least 32 for a meaningful diffraction pattern, got {n_atoms}")
    _check_periodic(atoms)  # atoms_only has run: check_periodic would run it again
    return _cluster(atoms, n_atoms, center, seed)


#: Largest number of (shift, atom) pairs :func:`_images_in_ball` tests in one array (a byte each).
_AT_ONCE = 1 << 20
#: The eight corners of the unit cell, fractional.
_CORNERS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=float)


@lru_cache(maxsize=64)
def _integer_shifts(reps: tuple[int, int, int]) -> np.ndarray:
    """Every integer vector with |component i| <= reps[i], (prod(2 reps + 1), 3), in C order (remembered: cells repeat)."""
    shifts = np.stack(np.meshgrid(*[np.arange(-r, r + 1) for r in reps], indexing="ij"), -1).reshape(-1, 3)
    shifts.setflags(write=False)
    return shifts


def _images_in_ball(frac: np.ndarray, half_width: np.ndarray, reps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(shift, atom)``: the images ``frac[atom] + shifts[shift]`` (shifts of :func:`_integer_shifts`)
    that can lie within the ball, in the order shift by shift, then atom by atom.

    ``frac`` are fractional coordinates relative to the ball's centre; an image within the ball's
    radius r lies within r / (spacing of the lattice planes) of it along every fractional axis
    (``half_width``), and only those images are kept (a margin of 1e-9 keeps rounding on the safe
    side). Only the images kept are ever computed: a cell of 10^5 atoms has 125 shifts, and all their
    images were 12 million positions; a cell of 4 x 10^5 was refused as "too thin".
    """
    half_width = half_width * (1 + 1e-9) + 1e-9
    # per axis and shift: which atoms' shifted coordinate stays within the ball's extent
    ok = [np.abs(frac[None, :, d] + np.arange(-reps[d], reps[d] + 1)[:, None]) <= half_width[d] for d in range(3)]
    if ok[0].size * len(ok[1]) * len(ok[2]) <= _AT_ONCE:
        # all shifts at once, in C order over (shift 0, shift 1, shift 2, atom): the order of the
        # loop below (a cell of a few atoms repeated ~15 times along each axis took 15 steps)
        inside = ok[0][:, None, None, :] & ok[1][None, :, None, :] & ok[2][None, None, :, :]
        return np.divmod(np.flatnonzero(inside), len(frac))
    n12 = (2 * reps[1] + 1) * (2 * reps[2] + 1)
    shifts, atoms = [], []
    for k0, first in enumerate(ok[0]):  # slowest axis of the shifts first, as _integer_shifts orders them
        idx = np.flatnonzero(first)
        if len(idx) == 0:
            continue
        inside = (ok[1][:, None, idx] & ok[2][None, :, idx]).reshape(n12, len(idx))
        s12, a = np.nonzero(inside)
        shifts.append(k0 * n12 + s12)
        atoms.append(idx[a])
    if not shifts:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    return np.concatenate(shifts), np.concatenate(atoms)


def _cluster(atoms: Atoms, n_atoms: int, center: int | None, seed: int = 0) -> Atoms:
    """:func:`cluster` of a structure that :func:`check_periodic` has accepted (e.g. a standard cell)."""
    cell = np.asarray(atoms.cell[:], dtype=float)
    frac = atoms.get_scaled_positions(wrap=True)
    positions = frac @ cell
    if center is None:
        # nearest image of every atom to the origin (corners of the unit cell): np.linalg.norm's
        # sqrt(add.reduce(x * x)), its square root taken of the nearest corner only (sqrt is monotonic)
        offsets = positions[:, None, :] - (_CORNERS @ cell)[None]
        dist = np.sqrt(np.add.reduce(offsets * offsets, axis=-1).min(axis=1))
        # ties (atoms equally near a corner) are broken by position, not by index, so that the
        # result does not depend on the order of the atoms: the first of (distance, x, y, z) rounded
        # to 1e-6, among the atoms at the shortest rounded distance (usually one)
        rounded = np.round(dist, 6)
        nearest = np.flatnonzero(rounded == rounded.min())
        center = int(nearest[np.lexsort(np.round(positions[nearest], 6).T[::-1])[0]])
    elif not 0 <= center < len(atoms):
        raise ValueError(f"center must be an atom index below {len(atoms)}, got {center}")
    origin = positions[center]

    volume = abs(np.linalg.det(cell))
    radius = 1.4 * (3 * n_atoms * (volume / len(atoms)) / (4 * np.pi)) ** (1 / 3)
    # number of images needed along each lattice vector to cover the ball: radius / plane spacing
    spacing = volume / np.linalg.norm(_cross(cell[[1, 2, 0]].T, cell[[2, 0, 1]].T).T, axis=1)  # rows b x c, c x a, a x b
    reps = np.ceil(radius / spacing).astype(int) + 1
    if np.prod(2 * reps + 1) > 1e6:
        raise StructureError(f"cannot cut a {n_atoms}-atom cluster: the cell is too thin ({np.round(spacing, 3)} Å)")
    rel = positions - origin
    shift, atom = _images_in_ball(rel @ np.linalg.inv(cell), radius / spacing, reps)
    # rows gathered with np.take, not by indexing: the same rows at under half the cost
    all_pos = np.take(rel, atom, axis=0) + np.take(_integer_shifts(tuple(int(r) for r in reps)) @ cell, shift, axis=0)
    dist = _lengths(all_pos)
    inside = np.flatnonzero(dist <= radius)  # the images in the ball, rows of all_pos
    dist = dist[inside]
    order = np.argsort(dist, kind="stable")
    dist = dist[order]
    # cut between shells: a count k is allowed when atom k starts a new shell
    gaps = np.flatnonzero(np.diff(dist) > _SHELL_GAP) + 1
    if len(gaps) == 0:
        raise StructureError("cannot cut a cluster: all atoms are at the same distance")
    k = int(gaps[np.argmin(np.abs(gaps - n_atoms))])
    keep = inside[order[:k]]
    ball = np.take(all_pos, keep, axis=0)
    if "site" in atoms.arrays and "displacement" in atoms.arrays:
        ball = _untie_displacements(ball, atom[keep], atoms, seed)
    out = Atoms(numbers=atoms.numbers[atom[keep]], positions=ball, pbc=False)
    out.info.update(atoms.info)
    return out


def _untie_displacements(positions: np.ndarray, atom: np.ndarray, cell: Atoms, seed: int) -> np.ndarray:
    """``positions`` of a ball (rows: images of the atoms ``atom`` of ``cell``) with the displacements
    from their sites dealt out anew among the images on each site, when the ball repeats a noisy cell.

    A noisy supercell of a few unit cells (an ab-initio MD snapshot of 16-128 atoms) is periodic: its
    ball repeats every displacement with the cell's period, and its diffraction pattern shows the
    cell's reciprocal lattice, reflections the hot crystal does not have (in a bcc cell of 16 atoms
    at Lindemann 0.1, 7 of 10 snapshots came out as another class, 4 of them confidently). Each
    image on site s (``cell.arrays["site"]``, -1: none) keeps its site and gets the displacement (Å,
    ``cell.arrays["displacement"]``) of another image on s, a random permutation (numpy
    ``default_rng(seed)``), so that the ball holds the cell's displacements as often as before, no
    longer in step with the cell.

    Left as they are: atoms on no site; two atoms nearest one site of the cell (in a hot or crowded
    cell both can be: dealt the same displacement, two of their images would fall onto one spot);
    balls that hold fewer than twice the cell's atoms (a cell of ~256 atoms repeats a few of them at
    the ball's edge, no superlattice); and cells whose displacements are an order of the crystal
    rather than noise (:func:`_ordered`).
    """
    site, displacement = cell.arrays["site"], cell.arrays["displacement"]
    if len(atom) < 2 * len(site) or _ordered(site, displacement):
        return positions
    site = site.copy()
    lattice = np.asarray(cell.cell[:], dtype=float)
    ideal = _wrap((cell.positions - displacement) @ np.linalg.inv(lattice))
    site[_close_pairs(ideal, lattice, 1e-3).ravel()] = -1
    rng = np.random.default_rng(seed)
    out = positions.copy()
    on_site = site[atom]
    for s in np.unique(on_site[on_site >= 0]):
        rows = np.flatnonzero(on_site == s)
        own = displacement[atom[rows]]
        out[rows] += own[rng.permutation(len(rows))] - own
    return out


def _ordered(site: np.ndarray, displacement: np.ndarray) -> bool:
    """True when the displacements (Å) of the atoms on sites have a few lengths, each shared by many
    atoms: at most two distinct lengths (to 1e-3 Å) per site, or half as many as atoms on sites.

    Atoms that the crystal's symmetry relates are displaced alike, and thermal displacements all
    differ. A pristine crystal whose lattice search took a finer pseudo-lattice is ordered (an A7
    structure near simple cubic: its sites the cubic ones, its atoms displaced by +-0.15 Å along the
    normal of its layers), and so is a relaxed defect; dealt out, their order would be lost.
    """
    on = site >= 0
    lengths = np.round(_lengths(displacement[on]) / 1e-3)
    distinct = len(np.unique(np.column_stack([site[on], lengths]), axis=0))
    return distinct <= max(2 * len(np.unique(site[on])), on.sum() / 2)
