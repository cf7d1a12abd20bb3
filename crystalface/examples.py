"""Real crystals, built with ASE from their experimental lattice parameters, one or two per class.

Used by ``crystalface demo``, the tests and the benchmarks as structures the model never saw
(the training set is made by :mod:`crystalface.dataset` from random elements and parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.build import bulk  # noqa: F401  (used by the doctests)
from ase.spacegroup import crystal
from scipy.spatial.transform import Rotation

__all__ = ["RealCrystal", "REAL_CRYSTALS", "supercell_near", "random_rotation"]


@dataclass(frozen=True)
class RealCrystal:
    """A crystal by space group, Wyckoff positions and lattice parameters (Å, degrees)."""

    name: str
    label: str
    symbol: str
    spacegroup: int
    basis: tuple
    cellpar: tuple

    def conventional(self) -> Atoms:
        """The conventional cell (cubic, hexagonal or body-centred tetragonal)."""
        return crystal(self.symbol, list(self.basis), spacegroup=self.spacegroup, cellpar=list(self.cellpar))

    def primitive(self) -> Atoms:
        """The primitive cell."""
        return crystal(self.symbol, list(self.basis), spacegroup=self.spacegroup, cellpar=list(self.cellpar), primitive_cell=True)


#: One real crystal per class (two for hex/rh), room-temperature lattice parameters.
REAL_CRYSTALS: tuple[RealCrystal, ...] = (
    RealCrystal("Cu", "fcc", "Cu", 225, ((0, 0, 0),), (3.615, 3.615, 3.615, 90, 90, 90)),
    RealCrystal("Fe", "bcc", "Fe", 229, ((0, 0, 0),), (2.8665, 2.8665, 2.8665, 90, 90, 90)),
    RealCrystal("Si", "diam", "Si", 227, ((0, 0, 0),), (5.431, 5.431, 5.431, 90, 90, 90)),
    RealCrystal("Mg", "hex/rh", "Mg", 194, ((1 / 3, 2 / 3, 1 / 4),), (3.209, 3.209, 5.211, 90, 90, 120)),
    RealCrystal("alpha-Po", "sc", "Po", 221, ((0, 0, 0),), (3.359, 3.359, 3.359, 90, 90, 90)),
    RealCrystal("In", "bct139", "In", 139, ((0, 0, 0),), (3.2523, 3.2523, 4.9461, 90, 90, 90)),
    RealCrystal("beta-Sn", "bct141", "Sn", 141, ((0, 0, 0),), (5.8318, 5.8318, 3.1818, 90, 90, 90)),
    RealCrystal("alpha-As", "hex/rh", "As", 166, ((0, 0, 0.2271),), (3.7598, 3.7598, 10.5475, 90, 90, 120)),
)


def supercell_near(atoms: Atoms, n_atoms: int = 256) -> Atoms:
    """Repeat a cell about equally far along each direction to get close to ``n_atoms`` atoms.

    >>> len(supercell_near(bulk("Cu", "fcc", a=3.6, cubic=True), 256))
    256
    """
    cell = np.asarray(atoms.cell[:])
    volume = abs(np.linalg.det(cell))
    spacing = volume / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    edge = (n_atoms / len(atoms) * volume) ** (1 / 3)
    reps = np.maximum(1, np.round(edge / spacing)).astype(int)
    return atoms.repeat(tuple(int(r) for r in reps))


def random_rotation(atoms: Atoms, seed: int | np.random.Generator | None = 0) -> Atoms:
    """A copy of ``atoms`` rigidly rotated (cell and positions) by a uniformly random rotation."""
    rng = np.random.default_rng(seed)
    rot = Rotation.random(random_state=rng).as_matrix()
    out = atoms.copy()
    if atoms.cell.rank < 3:  # a finite cluster: no cell to carry the atoms along
        out.positions = atoms.positions @ rot.T
        out.set_cell(np.asarray(atoms.cell[:]) @ rot.T)
        return out
    out.set_cell(np.asarray(atoms.cell[:]) @ rot.T, scale_atoms=True)
    return out
