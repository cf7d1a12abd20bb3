"""Step 6 of the pipeline: the two-dimensional diffraction fingerprint (DF-2D).

The far-field (Fraunhofer) intensity of a plane wave scattered by a finite cluster,

    I(q) = |sum_j f_j exp(i q . r_j)|^2,                      (kinematic; Ziletti et al. 2018, Methods)

on a flat 64 x 64 detector. For each detector pixel the scattered direction s (unit vector from the
sample to the pixel centre) fixes q = k (s - e_z) on the Ewald sphere, k = 2 pi / lambda. For each
crystal axis (x -> red, y -> green, z -> blue) the cluster is rotated by -45 and +45 degrees about
that axis and the two patterns are summed into the channel. The direct beam (a central disc) and the
detector edge (outside a ring) are zeroed and the image is min-max normalised to [0, 1].

Two kernels compute it:

* :func:`fingerprint_reference` is the definition: the direct sum over atoms for the exact q of every
  pixel, in float64. Slow; kept for tests.
* :func:`fingerprint` is the production kernel. With lambda = 5 pm the Ewald sphere is nearly flat:
  q(u, v) of the pixel at (u, v) = (x, y) / D is close to a sum a(u) + b(v) of a part that depends on
  the pixel column only and one that depends on the row only (least squares over the kept pixels),
  and then exp(i q . r) = exp(i a(u) . r) * exp(i b(v) . r) factorises. The amplitude of one
  orientation is one complex matrix product, (64 x N) @ (N x 64), done as three real ones (Gauss's
  trick), batched over orientations, one structure at a time (so a structure's fingerprint never
  depends on the others given with it: padding a batch to its largest cluster changes the length
  of the sums and, with it, their rounding). The small rest d = q - a(u) - b(v) (at most ~0.02 / Å) is put back to first order,
  exp(i d.r) ~ 1 + i d.r, which only adds weighted columns to the same product. The +45 degree
  pattern about z is the -45 degree one turned by a quarter on the detector, so five orientations
  are summed, not six.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from ase import Atoms

from .cell import StructureError, atoms_only

__all__ = ["DF2D", "fingerprint", "fingerprint_reference", "scattering_factors"]


@dataclass(frozen=True)
class DF2D:
    """Parameters of the two-dimensional diffraction fingerprint (SI units as named; angles in degrees).

    The defaults are the paper's: 5 pm wavelength, a 64 x 64 detector of 0.4 mm pixels 0.1 m from
    the sample, and +-45 degree rotations about x, y and z for the three colour channels. Positions
    of the cluster are read in Å, so q is in 1/Å; after length scaling (step 5) Å stands for
    "nearest-neighbour distances".
    """

    wavelength: float = 5e-12
    detector_distance: float = 0.1
    pixel_size: float = 4e-4
    n_pixels: int = 64
    angle: float = 45.0
    #: radius (pixels) of the central disc zeroed to remove the direct beam
    inner_radius: float = 3.0
    #: pixels farther than this (pixels) from the centre are zeroed
    outer_radius: float = 31.0

    def __post_init__(self):
        if self.n_pixels < 8:
            raise ValueError(f"n_pixels must be at least 8, got {self.n_pixels}")
        if not 0 <= self.inner_radius < self.outer_radius:
            raise ValueError("need 0 <= inner_radius < outer_radius")
        for name in ("wavelength", "detector_distance", "pixel_size"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def k(self) -> float:
        """Wavenumber 2 pi / lambda in 1/Å."""
        return 2 * np.pi / (self.wavelength * 1e10)

    def pixel_directions(self) -> np.ndarray:
        """(u, v) = (x, y) / D of the pixel centres along one detector axis, shape (n_pixels,)."""
        centres = (np.arange(self.n_pixels) - (self.n_pixels - 1) / 2) * self.pixel_size
        return centres / self.detector_distance

    def q_exact(self) -> np.ndarray:
        """Scattering vector of every pixel on the Ewald sphere, shape (n_pixels, n_pixels, 3), 1/Å.

        Index order is ``[row, column]`` with rows along the detector's y axis and columns along x.
        """
        u = self.pixel_directions()
        uu, vv = np.meshgrid(u, u, indexing="xy")  # uu varies along columns (x), vv along rows (y)
        norm = np.sqrt(1 + uu**2 + vv**2)
        return self.k * np.stack([uu / norm, vv / norm, 1 / norm - 1], axis=-1)

    def q_paraxial(self) -> np.ndarray:
        """The paraxial approximation of :meth:`q_exact`, same shape."""
        u = self.pixel_directions()
        uu, vv = np.meshgrid(u, u, indexing="xy")
        return self.k * np.stack([uu, vv, -(uu**2 + vv**2) / 2], axis=-1)

    def mask(self) -> np.ndarray:
        """Boolean (n_pixels, n_pixels) array, True where the detector is kept."""
        c = (self.n_pixels - 1) / 2
        i = np.arange(self.n_pixels) - c
        r = np.hypot(i[None, :], i[:, None])
        return (r >= self.inner_radius) & (r <= self.outer_radius)

    def rotations(self) -> np.ndarray:
        """The six rotation matrices, shape (3 channels, 2 signs, 3, 3), acting as ``r @ R.T``."""
        out = np.zeros((3, 2, 3, 3))
        for axis in range(3):
            for s, sign in enumerate((-1, 1)):
                t = np.radians(sign * self.angle)
                c, sn = np.cos(t), np.sin(t)
                a, b = [(1, 2), (2, 0), (0, 1)][axis]
                rot = np.eye(3)
                rot[a, a] = rot[b, b] = c
                rot[a, b], rot[b, a] = -sn, sn
                out[axis, s] = rot
        return out


def scattering_factors(atoms: Atoms) -> np.ndarray:
    """Element-dependent, q-independent scattering factor of each atom: its atomic number (the paper's choice)."""
    z = atoms.numbers.astype(float)
    if np.any(z <= 0):
        raise StructureError("unknown element (atomic number 0) in the structure")
    return z


def _finish(intensity: np.ndarray, params: DF2D) -> np.ndarray:
    """Mask and min-max normalise a batch of (B, 3, n, n) intensities."""
    intensity = intensity * _kernel_constants(params)[4]
    lo = intensity.min(axis=(1, 2, 3), keepdims=True)
    hi = intensity.max(axis=(1, 2, 3), keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    return ((intensity - lo) / span).astype(np.float32)


def _centred(atoms: Atoms) -> np.ndarray:
    if len(atoms) == 0:
        raise StructureError("the cluster has no atoms")
    pos = np.asarray(atoms.positions, dtype=float)
    if not np.all(np.isfinite(pos)):
        raise StructureError("atomic positions contain NaN or infinity")
    return pos - pos.mean(axis=0)


def fingerprint_reference(atoms: Atoms, params: DF2D = DF2D()) -> np.ndarray:
    """DF-2D by the direct sum over atoms at the exact q of every pixel (float64). The definition; slow.

    Parameters
    ----------
    atoms : ase.Atoms
        Finite cluster, usually scaled by :func:`crystalface.scale`.
    params : DF2D
        Descriptor parameters.

    Returns
    -------
    numpy.ndarray
        float32 image of shape (3, n_pixels, n_pixels) in [0, 1].

    Examples
    --------
    >>> from ase.build import bulk
    >>> from crystalface import cluster, scale, standard_cell
    >>> image = fingerprint_reference(scale(cluster(standard_cell(bulk("Cu", "fcc", a=3.6)), 64)))
    >>> image.shape, float(image.max())
    ((3, 64, 64), 1.0)
    """
    atoms_only(atoms, "fingerprint_reference")
    pos = _centred(atoms)
    f = scattering_factors(atoms)
    q = params.q_exact().reshape(-1, 3)
    out = np.zeros((3, params.n_pixels * params.n_pixels))
    for c, pair in enumerate(params.rotations()):
        for rot in pair:
            phase = q @ (pos @ rot.T).T  # (pixels, atoms)
            amp = np.exp(1j * phase) @ f
            out[c] += np.abs(amp) ** 2
    return _finish(out.reshape(1, 3, params.n_pixels, params.n_pixels), params)[0]


def fingerprint(
    atoms: Atoms | Sequence[Atoms],
    params: DF2D = DF2D(),
    batch_size: int | None = None,
    order: int = 1,
) -> np.ndarray:
    """DF-2D of one cluster or a batch of clusters, with the fast factorised kernel.

    Parameters
    ----------
    atoms : ase.Atoms or sequence of ase.Atoms
        Finite cluster(s), usually scaled by :func:`crystalface.scale`.
    params : DF2D
        Descriptor parameters.
    batch_size : None
        Deprecated and ignored since 0.1.1: every cluster is computed alone, so that its
        fingerprint is bit for bit the same whatever else is in the list (batches of 8, padded to
        their largest cluster, changed the rounding of the sums: up to 4e-7 in a pixel, and with it
        the last digits of a probability, depending on where a batch job cut its chunks). One at a
        time is also 5-10 % faster on one thread, as fast on two (benchmarks/fingerprint_speed.md).
    order : int
        Order (0 or 1) of the expansion of the rest between the exact q and its separable part.

    Returns
    -------
    numpy.ndarray
        float32 image(s) of shape (3, n, n), or (B, 3, n, n) for a sequence.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from crystalface import cluster, scale, standard_cell
    >>> fingerprint(scale(cluster(standard_cell(bulk("Fe", "bcc", a=2.87))))).shape
    (3, 64, 64)
    """
    single = isinstance(atoms, Atoms)
    structures = atoms_only(atoms, "fingerprint", many=True)
    if order not in (0, 1):
        raise ValueError(f"order must be 0 or 1, got {order}")
    if batch_size is not None:
        warnings.warn("fingerprint(batch_size=...) is ignored since crystalface 0.1.1: every cluster is computed "
                      "alone, so that its fingerprint does not depend on the others", FutureWarning, stacklevel=2)
    n = params.n_pixels
    result = np.zeros((len(structures), 3, n, n), np.float32)
    for i, cluster in enumerate(structures):
        result[i] = _fingerprint_one(cluster, params, order)
    return result[0] if single else result


#: Monomials of the rotated coordinates (x, y, z) that weight the expansion terms of exp(i d . r).
_TERMS = {0: [()], 1: [(), (0,), (1,)]}


def _detector_turns(angle: float) -> int | None:
    """Quarter turns of the detector that carry the -angle pattern about z onto the +angle one, or None.

    The beam is along z, so a rotation of the cluster about z only turns the pattern on the (square,
    centred) detector: Rz(+t) = Rz(2t) Rz(-t), and when 2t is a multiple of 90 degrees the +t pattern is
    the -t pattern turned by quarter turns (``np.rot90(image, k=-2t/90)``), with no second sum.
    """
    turns = 2 * angle / 90.0
    return int(round(turns)) if abs(turns - round(turns)) < 1e-9 else None


@lru_cache(maxsize=8)
def _separable_q(params: DF2D) -> tuple[np.ndarray, np.ndarray]:
    """Column part a(u) and row part b(v) of q, (n_pixels, 3) each, such that q(u, v) ~ a(u) + b(v).

    Least squares over the detector pixels that are kept (the mask), by backfitting (alternating
    weighted means; each is the exact minimiser given the other, so the sum of squares only falls).
    Fitted this way the largest residual d = q_exact - a - b on the kept pixels is about half of
    that of q made exact along both detector axes, and the first-order expansion is more accurate
    than the second-order one of the axis model (0.0034 vs 0.0063 max abs from the reference on 28
    clusters with noise and vacancies); the z part of d need not be expanded.
    """
    q = params.q_exact()  # [row (v), column (u), xyz]
    # rows and columns wholly outside the mask still get a definite (irrelevant) value
    weight = params.mask() + 1e-3
    a = np.zeros((params.n_pixels, 3))
    b = np.zeros((params.n_pixels, 3))
    for _ in range(200):
        a = np.einsum("rc,rcx->cx", weight, q - b[:, None, :]) / weight.sum(0)[:, None]
        b = np.einsum("rc,rcx->rx", weight, q - a[None, :, :]) / weight.sum(1)[:, None]
    # a and b are defined up to a constant moved from one to the other: split it evenly, so that the
    # fit is symmetric under exchanging rows and columns (a 90-degree turn of the detector)
    shift = (a.mean(0) - b.mean(0)) / 2
    return a - shift, b + shift


@lru_cache(maxsize=8)
def _pixel_coefficients(params: DF2D, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Real and imaginary per-pixel coefficient of each expansion term, (n_terms, rows, cols) float32 each.

    exp(i d . r) ~ 1 + i (d_x x + d_y y) for the residual d = q_exact - a(u) - b(v) (at most
    ~0.02 / Å on the kept pixels, so |d . r| < 0.1 for our clusters).
    """
    a, b = _separable_q(params)
    d = params.q_exact() - (a[None, :, :] + b[:, None, :])
    coef = np.stack([np.ones(d.shape[:2], dtype=complex) if not t else 1j * d[..., t[0]] for t in _TERMS[order]])
    return coef.real.astype(np.float32), coef.imag.astype(np.float32)


@lru_cache(maxsize=8)
def _kernel_constants(params: DF2D) -> tuple[np.ndarray, int | None, np.ndarray, np.ndarray, np.ndarray]:
    """What every cluster's kernel reuses: the rotations summed over as one (3 O, 3) matrix, the
    detector turns of the sixth (None: it is summed too), a(u) and b(v) in float32, and the mask."""
    rot = params.rotations().reshape(6, 3, 3)
    turns = _detector_turns(params.angle)
    if turns is not None:  # the +angle pattern about z is the -angle one turned: five sums, not six
        rot = rot[:5]
    rot = rot.reshape(-1, 3)
    qa, qb = (q.astype(np.float32) for q in _separable_q(params))
    mask = params.mask()
    for array in (rot, qa, qb, mask):
        array.setflags(write=False)  # shared by every call
    return rot, turns, qa, qb, mask


def _fingerprint_one(atoms: Atoms, params: DF2D, order: int) -> np.ndarray:
    """DF-2D (3, n, n) of one cluster."""
    import torch  # here, not at the top: what only describes a fingerprint (DF2D) does not need PyTorch

    n_atoms, n = len(atoms), params.n_pixels
    pos = _centred(atoms)
    f = scattering_factors(atoms)
    rot, turns, qa, qb, _ = _kernel_constants(params)
    n_orient = len(rot) // 3
    # rotated positions in every orientation, (O, N, 3), from one matrix product (an einsum took 15x
    # longer); computed in float64 and rounded once
    r = np.ascontiguousarray((pos @ rot.T).reshape(n_atoms, n_orient, 3).transpose(1, 0, 2), dtype=np.float32)
    # column factor X[n, i] = exp(i a(u_i) . r_n), (O, N, n), and row factor Y[l, n] = exp(i b(v_l) . r_n),
    # (O, n, N), as real and imaginary parts (NumPy's float32 sin and cos: ~3x faster than torch's here)
    phase_x = r @ qa.T
    phase_y = qb @ r.transpose(0, 2, 1)
    # weights of the expansion terms, (O, T, N): f_n times a monomial of the rotated coordinates
    terms = _TERMS[order]
    weights = np.empty((n_orient, len(terms), n_atoms), np.float32)
    for t, monomial in enumerate(terms):
        np.multiply(f, r[..., monomial[0]] if monomial else 1.0, out=weights[:, t])
    # Gauss's three real products for one complex one: with P1 = Yr Xr, P2 = Yi Xi and
    # P3 = (Yr + Yi)(Xr + Xi), Re = P1 - P2 and Im = P3 - P1 - P2. The three go through one batched
    # matrix product of the stacked parts, (3 O) x (T n, N) @ (N, n): 3/4 of the operations of the
    # four real products, and the matrix product is most of the kernel's time
    col = np.empty((n_orient, 3, n_atoms, n), np.float32)
    np.cos(phase_x, out=col[:, 0])
    np.sin(phase_x, out=col[:, 1])
    np.add(col[:, 0], col[:, 1], out=col[:, 2])
    row_re, row_im = np.cos(phase_y), np.sin(phase_y)
    left = np.empty((n_orient, 3, len(terms), n, n_atoms), np.float32)  # [o, part, t, row, atom]
    np.multiply(row_re[:, None], weights[:, :, None], out=left[:, 0])
    np.multiply(row_im[:, None], weights[:, :, None], out=left[:, 1])
    np.multiply((row_re + row_im)[:, None], weights[:, :, None], out=left[:, 2])
    products = torch.bmm(torch.from_numpy(left).view(3 * n_orient, len(terms) * n, n_atoms),
                         torch.from_numpy(col).view(3 * n_orient, n_atoms, n))
    p1, p2, p3 = products.numpy().reshape(n_orient, 3, len(terms), n, n).transpose(1, 0, 2, 3, 4)
    amp_re, amp_im = p1 - p2, p3 - p1 - p2  # (O, T, n, n): the amplitude of each term
    # sum_t c_t amp_t, the coefficient of term 0 being 1
    c_re, c_im = _pixel_coefficients(params, order)
    re = amp_re[:, 0] + (amp_re[:, 1:] * c_re[1:] - amp_im[:, 1:] * c_im[1:]).sum(1)
    im = amp_im[:, 0] + (amp_re[:, 1:] * c_im[1:] + amp_im[:, 1:] * c_re[1:]).sum(1)
    intensity = re * re + im * im  # (O, n, n)
    if turns is not None:
        intensity = np.concatenate([intensity, np.rot90(intensity[4:5], -turns, axes=(-2, -1))])
    intensity = intensity.reshape(1, 3, 2, n, n).sum(2)
    return _finish(intensity.astype(np.float64), params)[0]
