"""Training data: pristine crystal structures of the seven classes, labelled the way the paper did.

The paper took 10 517 elemental solids from the AFLOW library and kept those whose spglib space group
is one of eight and the same at symprec 1e-3, 1e-6 and 1e-9 Å (1e-3 and 1e-6 only for 166 and 194).
That library cannot be downloaded here, so we draw the equivalent structures from the prototypes of
each class over the range of their free parameters (c/a, rhombohedral angle, internal coordinate),
with a random element, a random nearest-neighbour distance, a random cell choice and a random
orientation, and label every one of them with spglib exactly as the paper did. A draw that spglib
puts in another of the seven classes (a tI2 lattice at c/a = 1 is bcc) takes that label; a draw that
falls outside the eight groups, or on which the tolerances disagree, is dropped and drawn again.
Beyond the paper, a draw is also dropped when it lies within the fingerprint's resolution of another
class (:data:`AMBIGUITY`): its paper label is right, but no classifier can tell it from that class.

The set is stored as an ASE database (SQLite), one row per structure with its label and the
parameters that made it, so ``ase db dataset.db label=fcc`` or ``ase db dataset.db prototype=hcp``
selects from it on the command line.
"""

from __future__ import annotations

import math
import pathlib
import sqlite3
import warnings
from dataclasses import dataclass, field
from itertools import product
from typing import Callable, Iterator, Mapping

import numpy as np
import spglib
from ase import Atoms
from ase.data import chemical_symbols
from ase.db import connect
from ase.geometry import minkowski_reduce
from ase.spacegroup import crystal
from scipy.spatial.transform import Rotation
from tqdm.auto import tqdm

from .cell import check_periodic
from .classes import CLASSES, SPACE_GROUP_CLASS

__all__ = ["PROTOTYPES", "Prototype", "generate_structures", "is_unambiguous", "label_structure", "load_dataset", "make_dataset"]

#: spglib tolerances (Å) a label must survive (paper, Methods).
SYMPRECS: tuple[float, ...] = (1e-3, 1e-6, 1e-9)
#: The paper skips 1e-9 for these two groups without saying why; we follow it. The structures made
#: here and the AFLOW prototype files pass 1e-9 as well, so no label of ours depends on it.
_HEXAGONAL_GROUPS = (166, 194)

#: Elements drawn for a structure: Z = 3..83 without the noble gases. The element does not change a
#: monatomic structure's symmetry; it only sets the scattering factor of the fingerprint.
ELEMENTS: tuple[str, ...] = tuple(chemical_symbols[z] for z in range(3, 84) if z not in (10, 18, 36, 54))
#: Nearest-neighbour distance range (Å); the fingerprint divides it out, so any sensible range works.
NN_DISTANCE_RANGE: tuple[float, float] = (2.2, 3.6)
CELL_CHOICES: tuple[str, ...] = ("primitive", "conventional", "supercell")
#: Repetitions of the conventional cell for the "supercell" choice: not all equal, so that the
#: supercell is not just a bigger copy of the conventional cell's shape.
_REPEATS: tuple[tuple[int, int, int], ...] = tuple(r for r in product((1, 2, 3), repeat=3) if len(set(r)) > 1)
_MAX_ATOMS = 300

#: Draws allowed per class before giving up: ``_MIN_DRAWS + _DRAWS_PER_STRUCTURE * quota``.
#: Almost every draw is kept (a drop needs a parameter within ~1e-3 Å of a special value), so
#: hitting this cap means a prototype or a range is broken, not bad luck.
_MIN_DRAWS = 200
_DRAWS_PER_STRUCTURE = 20


@dataclass(frozen=True)
class Prototype:
    """A structure prototype: its AFLOW label, nominal class, free parameters and how to build it.

    ``ranges`` maps each free parameter to the interval it is drawn from uniformly; ``references``
    holds the AFLOW reference structures of this prototype in the same parameters (each lies inside
    ``ranges``). ``build(symbol, params, primitive)`` returns the structure with conventional lattice
    constant ``a = 1`` Å (the generator rescales it), as the primitive cell or the conventional one
    (cubic; hexagonal for hR and hP; body-centred tetragonal with two lattice points for tI).

    Examples
    --------
    >>> hcp = PROTOTYPES["hcp"]
    >>> hcp.aflow, hcp.nominal, hcp.ranges
    ('A_hP2_194_c', 'hex/rh', {'c_over_a': (1.45, 1.95)})
    >>> len(hcp.build("Mg", {"c_over_a": 1.62}, primitive=True))
    2
    """

    name: str
    aflow: str
    nominal: str
    build: Callable[[str, Mapping[str, float], bool], Atoms] = field(repr=False)
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    references: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def sample(self, rng: np.random.Generator) -> dict[str, float]:
        """Draw every free parameter uniformly in its range (sorted by name, for a fixed draw order)."""
        return {key: float(rng.uniform(*self.ranges[key])) for key in sorted(self.ranges)}


def _cubic(spacegroup: int, basis: list[tuple[float, float, float]]):
    def build(symbol: str, params: Mapping[str, float], primitive: bool) -> Atoms:
        return crystal(symbol, basis, spacegroup=spacegroup, cellpar=[1, 1, 1, 90, 90, 90], primitive_cell=primitive)

    return build


def _tetragonal(spacegroup: int):
    # Origin choice 1 of ASE's setting 1 puts the 2a (I4/mmm) and 4a (I4_1/amd) sites at the origin.
    def build(symbol: str, params: Mapping[str, float], primitive: bool) -> Atoms:
        cellpar = [1, 1, params["c_over_a"], 90, 90, 90]
        return crystal(symbol, [(0, 0, 0)], spacegroup=spacegroup, cellpar=cellpar, primitive_cell=primitive)

    return build


def _hexagonal(spacegroup: int, basis: Callable[[Mapping[str, float]], list[tuple[float, float, float]]]):
    # R-3m is built in its hexagonal setting (ASE setting 1); primitive_cell=True gives the rhombohedral cell.
    def build(symbol: str, params: Mapping[str, float], primitive: bool) -> Atoms:
        sites = basis(params)
        cellpar = [1, 1, _hexagonal_c_over_a(params), 90, 90, 120]
        return crystal([symbol] * len(sites), sites, spacegroup=spacegroup, cellpar=cellpar, primitive_cell=primitive)

    return build


def _hexagonal_c_over_a(params: Mapping[str, float]) -> float:
    if "alpha_rh" not in params:
        return params["c_over_a"]
    # Rhombohedral (a_r, alpha) -> hexagonal axes: a = 2 a_r sin(alpha/2), c = a_r sqrt(3 (1 + 2 cos alpha)).
    alpha = math.radians(params["alpha_rh"])
    return math.sqrt(3.0 * (1.0 + 2.0 * math.cos(alpha))) / (2.0 * math.sin(alpha / 2.0))


def _alpha_rh(c_over_a: float) -> float:
    """Rhombohedral angle (degrees) of an hR lattice with hexagonal axial ratio ``c_over_a``."""
    return math.degrees(math.acos(1.0 - 1.0 / (2.0 * (1.0 / 3.0 + c_over_a**2 / 9.0))))


def _registry(*prototypes: Prototype) -> dict[str, Prototype]:
    return {p.name: p for p in prototypes}


#: The prototypes drawn for each class, by name. Reference values are the AFLOW prototype
#: encyclopedia's (Mehl et al. 2017, Hicks et al. 2019), converted to these parameters.
PROTOTYPES: dict[str, Prototype] = _registry(
    Prototype("fcc", "A_cF4_225_a", "fcc", _cubic(225, [(0, 0, 0)])),
    Prototype("bcc", "A_cI2_229_a", "bcc", _cubic(229, [(0, 0, 0)])),
    Prototype("sc", "A_cP1_221_a", "sc", _cubic(221, [(0, 0, 0)])),
    Prototype("diamond", "A_cF8_227_a", "diam", _cubic(227, [(0, 0, 0)])),
    Prototype(
        "hcp", "A_hP2_194_c", "hex/rh",
        _hexagonal(194, lambda p: [(1 / 3, 2 / 3, 1 / 4)]),
        {"c_over_a": (1.45, 1.95)},
        {"Mg": {"c_over_a": 1.62359393014}},
    ),
    Prototype(
        "dhcp", "A_hP4_194_ac", "hex/rh",
        _hexagonal(194, lambda p: [(0, 0, 0), (1 / 3, 2 / 3, 1 / 4)]),
        {"c_over_a": (3.0, 3.45)},
        {"alpha-La": {"c_over_a": 3.2175066313}},
    ),
    Prototype(
        # As (c/a 2.80, x 0.227), Sb (2.62, 0.234), Bi (2.61, 0.234). The range stops short of the
        # simple-cubic limit (c/a = sqrt(6), x = 1/4): at c/a < 2.5 and x > 0.238 the structure is a
        # few per cent from sc, and a first model called such draws sc.
        "alpha_As", "A_hR2_166_c", "hex/rh",
        _hexagonal(166, lambda p: [(0, 0, p["x"])]),
        {"c_over_a": (2.5, 2.9), "x": (0.21, 0.238)},
        {"alpha-As": {"c_over_a": 2.7815666977, "x": 0.22754}},
    ),
    Prototype(
        # The rhombohedral angle passes through fcc (60°), sc (90°) and bcc (109.47°); spglib relabels
        # such draws rather than the range excluding windows around them.
        "hR1", "A_hR1_166_a", "hex/rh",
        _hexagonal(166, lambda p: [(0, 0, 0)]),
        {"alpha_rh": (45.0, 115.0)},
        {"alpha-Hg": {"alpha_rh": _alpha_rh(1.92728082582)}, "beta-Po": {"alpha_rh": _alpha_rh(0.968139947937)}},
    ),
    Prototype(
        "alpha_Sm", "A_hR3_166_ac", "hex/rh",
        _hexagonal(166, lambda p: [(0, 0, 0), (0, 0, p["x"])]),
        {"c_over_a": (7.0, 7.5), "x": (0.21, 0.235)},
        {"alpha-Sm": {"c_over_a": 7.25049442597, "x": 0.22222}},
    ),
    Prototype(
        "tI2", "A_tI2_139_a", "bct139",
        _tetragonal(139),
        {"c_over_a": (0.6, 2.0)},
        {"In": {"c_over_a": 1.52061313499}, "alpha-Pa": {"c_over_a": 0.823499491353}},
    ),
    Prototype(
        "beta_Sn", "A_tI4_141_a", "bct141",
        _tetragonal(141),
        {"c_over_a": (0.45, 1.2)},
        {"beta-Sn": {"c_over_a": 0.545611989437}},
    ),
)

_BY_CLASS: dict[str, tuple[Prototype, ...]] = {
    cls: tuple(p for p in PROTOTYPES.values() if p.nominal == cls) for cls in CLASSES
}


#: Raised by spglib >= 2.7 when the symmetry search fails and errors are opted in (the default from 3.0).
_SPGLIB_ERRORS = (spglib.SpglibError,) if hasattr(spglib, "SpglibError") else ()


def _space_group(cell: tuple, symprec: float) -> int | None:
    with warnings.catch_warnings():
        # spglib 2.7-2.x warns on every call until its error handling changes in 3.0; both ways are handled.
        warnings.filterwarnings("ignore", message="Set OLD_ERROR_HANDLING", category=DeprecationWarning)
        try:
            dataset = spglib.get_symmetry_dataset(cell, symprec=symprec)
        except _SPGLIB_ERRORS:
            return None
    return None if dataset is None else int(dataset.number)


def label_structure(atoms: Atoms) -> tuple[int | None, str | None]:
    """Space group and class of a structure as the paper labelled it, or ``(None, None)``.

    The spglib space group is computed at symprec 1e-3, 1e-6 and 1e-9 Å (only 1e-3 and 1e-6 when the
    first answer is 166 or 194). The label is kept only when all answers agree and the group is one of
    the eight of :data:`crystalface.classes.SPACE_GROUP_CLASS`; no label is ever forced.

    Parameters
    ----------
    atoms
        A periodic structure (three lattice vectors), positions in Å.

    Returns
    -------
    (space group number, class name), or ``(None, None)``.

    Examples
    --------
    >>> from ase.build import bulk
    >>> label_structure(bulk("Cu", "fcc", a=3.6))
    (225, 'fcc')
    >>> label_structure(bulk("Cu", "fcc", a=3.6, orthorhombic=True).repeat((1, 1, 2))[:-1])
    (None, None)
    """
    check_periodic(atoms)
    cell = (np.asarray(atoms.cell[:], dtype=float), atoms.get_scaled_positions(), atoms.numbers)
    number = _space_group(cell, SYMPRECS[0])
    if number not in SPACE_GROUP_CLASS:
        return None, None
    tighter = SYMPRECS[1:2] if number in _HEXAGONAL_GROUPS else SYMPRECS[1:]
    if any(_space_group(cell, symprec) != number for symprec in tighter):
        return None, None
    return number, SPACE_GROUP_CLASS[number]


#: Lattice translations tried for the nearest neighbour; on a Minkowski-reduced cell ±2 is ample.
_IMAGES = np.array(list(product(range(-2, 3), repeat=3)), dtype=float)


#: A structure is dropped when spglib at this fraction of the nearest-neighbour distance puts it in
#: another class: such structures (a tI2 with c/a within ~1.7 % of 1, an hR1 within ~0.7 degrees of
#: 90) are that other class within what the fingerprint can resolve, and their paper label would be
#: a coin flip for any classifier (measured: a model trained with them got exactly these wrong).
AMBIGUITY = 0.025


def is_unambiguous(atoms: Atoms, label: str, nn_distance: float) -> bool:
    """True unless ``atoms`` falls into a class other than ``label`` at symprec = AMBIGUITY x ``nn_distance``.

    >>> from ase.build import bulk
    >>> is_unambiguous(bulk("Cu", "fcc", a=3.6), "fcc", 2.55)
    True
    """
    cell = (np.asarray(atoms.cell[:], dtype=float), atoms.get_scaled_positions(), atoms.numbers)
    return SPACE_GROUP_CLASS.get(_space_group(cell, AMBIGUITY * nn_distance)) == label


def _nearest_neighbour_distance(atoms: Atoms) -> float:
    # ase.neighborlist builds bins for a general cutoff and was 70 % of the generator's time on these
    # few-atom cells; a brute-force search over a reduced cell is exact and ~100x faster.
    cell, _ = minkowski_reduce(atoms.cell[:])
    frac = np.linalg.solve(cell.T, atoms.positions.T).T
    diff = frac[:, None, :] - frac[None, :, :]
    diff -= np.round(diff)
    vectors = (diff.reshape(-1, 1, 3) + _IMAGES[None, :, :]) @ cell
    lengths = np.linalg.norm(vectors, axis=-1)
    return float(lengths[lengths > 1e-8].min())


def _draw(cls: str, seed: int, index: int) -> tuple[Atoms, dict]:
    """Draw number ``index`` of the dataset with ``seed``: a prototype of class ``cls`` and everything random."""
    # A child seed per draw makes each draw reproducible on its own, whatever came before it.
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    prototypes = _BY_CLASS[cls]
    prototype = prototypes[rng.integers(len(prototypes))]
    params = prototype.sample(rng)
    symbol = ELEMENTS[rng.integers(len(ELEMENTS))]
    cell_choice = CELL_CHOICES[rng.integers(len(CELL_CHOICES))]
    nn_distance = float(rng.uniform(*NN_DISTANCE_RANGE))
    quaternion = rng.normal(size=4)  # a normalised 4D Gaussian is a uniformly random rotation
    repeat_index = rng.integers(len(_REPEATS))

    atoms = prototype.build(symbol, params, cell_choice == "primitive")
    scale = nn_distance / _nearest_neighbour_distance(atoms)
    if cell_choice == "supercell":
        repeats = [r for r in _REPEATS if len(atoms) * np.prod(r) <= _MAX_ATOMS]
        atoms = atoms.repeat(repeats[repeat_index % len(repeats)])
    rotation = Rotation.from_quat(quaternion).as_matrix()
    atoms.set_cell(scale * atoms.cell[:] @ rotation.T, scale_atoms=True)

    number, label = label_structure(atoms)
    if label is not None and not is_unambiguous(atoms, label, nn_distance):
        number, label = None, None
    info = {
        "label": label,
        "spacegroup": number,
        "prototype": prototype.name,
        "aflow": prototype.aflow,
        "cell_choice": cell_choice,
        "nn_distance": nn_distance,
        **params,
        "seed": seed,
    }
    return atoms, info


def _quotas(size: int) -> dict[str, int]:
    per_class, remainder = divmod(size, len(CLASSES))
    return {cls: per_class + (i < remainder) for i, cls in enumerate(CLASSES)}


def generate_structures(size: int, seed: int = 0, progress: bool = False) -> Iterator[tuple[Atoms, dict]]:
    """Yield ``size`` pristine structures balanced over the seven classes, each with its key-value pairs.

    Each class gets ``size // 7`` structures and the first ``size % 7`` classes (in the order of
    :data:`crystalface.classes.CLASSES`) one more. Classes are drawn in turn; for each draw a prototype
    of the class is chosen uniformly, then its free parameters (uniform in :attr:`Prototype.ranges`),
    an element (uniform over :data:`ELEMENTS`), a nearest-neighbour distance (uniform in
    :data:`NN_DISTANCE_RANGE`, Å), a cell choice (primitive, conventional, or the conventional cell
    repeated by a random non-cubic (n1, n2, n3) with each n in 1..3) and a uniformly random rotation.
    The final structure is labelled by :func:`label_structure`; the balance is over those labels, so a
    draw spglib puts in another class counts for that class, and one without a label is drawn again.

    Parameters
    ----------
    size
        Number of structures (> 0).
    seed
        Non-negative integer; the same ``(size, seed)`` gives the same structures in the same order.
    progress
        Show a progress bar (tqdm).

    Yields
    ------
    (atoms, key_value_pairs): ``label`` (class), ``spacegroup``, ``prototype``, ``aflow``,
    ``cell_choice``, ``nn_distance`` (Å), the free parameters (``c_over_a``, ``x``, ``alpha_rh`` in
    degrees) the prototype has, and ``seed``.

    Raises
    ------
    ValueError
        For a ``size`` or ``seed`` that is not a positive (non-negative) integer, at the call.
    RuntimeError
        While iterating, if a class cannot be filled within ``200 + 20 * quota`` draws.

    Examples
    --------
    >>> pairs = list(generate_structures(size=14, seed=0))
    >>> sorted({info["label"] for _, info in pairs}) == sorted(CLASSES)
    True
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    # Checked here, not on the first next(): the generator below is lazy.
    return _generate(int(size), int(seed), progress)


def _generate(size: int, seed: int, progress: bool) -> Iterator[tuple[Atoms, dict]]:
    quotas = _quotas(size)
    remaining = dict(quotas)
    draws = dict.fromkeys(CLASSES, 0)
    index = 0
    turn = 0
    with tqdm(total=size, disable=not progress, desc="structures", unit="structure") as bar:
        while any(remaining.values()):
            while remaining[CLASSES[turn % len(CLASSES)]] == 0:
                turn += 1
            cls = CLASSES[turn % len(CLASSES)]
            turn += 1
            draws[cls] += 1
            quota = quotas[cls]
            if draws[cls] > _MIN_DRAWS + _DRAWS_PER_STRUCTURE * quota:
                raise RuntimeError(
                    f"could not fill class {cls!r}: {quota - remaining[cls]} of {quota} structures after "
                    f"{draws[cls] - 1} draws from prototypes {[p.name for p in _BY_CLASS[cls]]}"
                )
            atoms, info = _draw(cls, seed, index)
            index += 1
            if remaining.get(info["label"], 0) == 0:
                continue
            remaining[info["label"]] -= 1
            bar.update()
            yield atoms, info


def _description() -> dict:
    return {
        "generator": "crystalface.dataset.generate_structures",
        "description": (
            "pristine structures drawn from the prototypes of each class over their free parameters, "
            "random element, nearest-neighbour distance, cell choice and rotation; labelled by spglib "
            "at symprec 1e-3, 1e-6, 1e-9 Å (1e-3, 1e-6 for 166 and 194), relabelled to the spglib class; "
            f"dropped when spglib at {AMBIGUITY} x the nearest-neighbour distance gives another class"
        ),
        "ambiguity": AMBIGUITY,
        "classes": list(CLASSES),
        "symprecs": list(SYMPRECS),
        "nn_distance_range": list(NN_DISTANCE_RANGE),
        "elements": list(ELEMENTS),
        "cell_choices": list(CELL_CHOICES),
        "prototypes": {
            p.name: {"aflow": p.aflow, "nominal": p.nominal, "ranges": {k: list(v) for k, v in p.ranges.items()}}
            for p in PROTOTYPES.values()
        },
    }


def make_dataset(
    path: str | pathlib.Path,
    size: int = 14000,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> pathlib.Path:
    """Generate ``size`` labelled pristine structures and write them to an ASE database (SQLite).

    Every row holds the structure and the key-value pairs of :func:`generate_structures`; the database
    metadata records ``size``, ``seed``, the crystalface version and the generator's description
    (tolerances, ranges of every prototype). The file is written under a temporary name and moved
    into place at the end, so an interrupted run never leaves a partial dataset at ``path``.

    Parameters
    ----------
    path
        Output file; must end in ``.db`` (so ``ase db`` recognises it as SQLite).
    size
        Number of structures (the paper had 10 517; 14 000 gives 2000 per class: twice 7000 made
        the decision boundaries between neighbouring classes sharper, docs/method.md).
    seed
        Non-negative integer seed.
    progress
        Show a progress bar.
    overwrite
        Replace an existing file at ``path``; otherwise an existing file is an error.

    Returns
    -------
    The path written.

    Examples
    --------
    >>> import tempfile, os
    >>> path = make_dataset(os.path.join(tempfile.mkdtemp(), "train.db"), size=14, progress=False)
    >>> atoms, labels, info = load_dataset(path)
    >>> len(atoms), labels[0]
    (14, 'bcc')
    """
    from . import __version__  # imported here: the package __init__ may one day import this module

    path = pathlib.Path(path)
    if path.suffix != ".db":
        raise ValueError(f"the dataset is an SQLite ASE database and its name must end in .db, got {path}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist")
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        with connect(partial, type="db", append=False) as db:  # one transaction: much faster than a commit per row
            for atoms, info in generate_structures(size, seed=seed, progress=progress):
                db.write(atoms, **info)
        db = connect(partial, type="db")
        db.metadata = {"size": int(size), "seed": int(seed), "crystalface_version": __version__, **_description()}
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def load_dataset(path: str | pathlib.Path) -> tuple[list[Atoms], list[str], list[dict]]:
    """Read a dataset written by :func:`make_dataset`: structures, class labels and key-value pairs, in id order.

    Parameters
    ----------
    path
        The ``.db`` file.

    Examples
    --------
    >>> atoms, labels, info = load_dataset("dataset.db")  # doctest: +SKIP
    >>> info[0]["prototype"], info[0]["cell_choice"]  # doctest: +SKIP
    ('bcc', 'supercell')
    """
    path = pathlib.Path(path)
    if not path.is_file():
        # ase.db.connect would silently create an empty database here.
        raise FileNotFoundError(f"no dataset at {path}")
    not_ours = f"{path} is not a data set made by crystalface dataset"
    atoms, labels, infos = [], [], []
    try:
        for row in connect(path, type="db").select(sort="id"):
            if "label" not in row.key_value_pairs:
                raise ValueError(f"{not_ours}: row {row.id} has no class label")
            atoms.append(row.toatoms())
            labels.append(row.label)
            infos.append(dict(row.key_value_pairs))
    except sqlite3.DatabaseError as error:  # another file, or a damaged database
        raise ValueError(f"{not_ours}: {error}") from None
    if not atoms:
        raise ValueError(f"{not_ours}: it holds no structures")
    return atoms, labels, infos
