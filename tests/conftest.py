"""Shared fixtures: the class prototypes from /work/shared/data, and small helpers to rotate structures."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

try:
    import crystalface  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ase.io
from ase import Atoms
from scipy.spatial.transform import Rotation

#: /work/shared/data seen from /work/main/tests (outside the repository; see its SOURCES.md).
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

#: One prototype per class, plus the rhombohedral member of hex/rh, keyed by label.
#: The label is the class name, except "hex/rh (hR)" for the second hex/rh prototype.
PROTOTYPE_FILES = {
    "fcc": "fcc_Cu_A_cF4_225_a.in",
    "bcc": "bcc_W_A_cI2_229_a.in",
    "sc": "sc_alphaPo_A_cP1_221_a.in",
    "diam": "diam_C_A_cF8_227_a.in",
    "hex/rh": "hcp_Mg_A_hP2_194_c.in",
    "bct139": "bctIn_In_A_tI2_139_a.in",
    "bct141": "bctBetaSn_Sn_A_tI4_141_a.in",
    "hex/rh (hR)": "rhombAlphaAs_As_A_hR2_166_c.in",
}
LABELS = list(PROTOTYPE_FILES)


def read_aims(path: Path) -> Atoms:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="FHI-aims IO is moving", category=FutureWarning)
        return ase.io.read(path, format="aims")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder; tests that need it are skipped when it is absent."""
    if not (DATA / "prototypes").is_dir():
        pytest.skip(f"shared test data not found at {DATA} (expected prototypes/*.in next to the repository)")
    return DATA


@pytest.fixture(scope="session")
def _prototype_cache(data_dir) -> dict[str, Atoms]:
    return {label: read_aims(data_dir / "prototypes" / name) for label, name in PROTOTYPE_FILES.items()}


@pytest.fixture
def prototypes(_prototype_cache) -> dict[str, Atoms]:
    """``{label: Atoms}``: the primitive cell of each class prototype (fresh copies, safe to modify).

    Labels are the seven class names (hex/rh is hcp Mg) and ``"hex/rh (hR)"`` (alpha-As, R-3m).
    """
    return {label: atoms.copy() for label, atoms in _prototype_cache.items()}


@pytest.fixture
def class_prototypes(prototypes) -> dict[str, Atoms]:
    """``{class_name: Atoms}`` for the seven classes, one prototype each."""
    return {label: atoms for label, atoms in prototypes.items() if label != "hex/rh (hR)"}


@pytest.fixture(params=LABELS)
def prototype(request, _prototype_cache) -> tuple[str, Atoms]:
    """Each prototype in turn, as ``(label, Atoms)``."""
    return request.param, _prototype_cache[request.param].copy()


def rotated(atoms: Atoms, seed: int) -> Atoms:
    """A copy of ``atoms`` (positions and lattice vectors) rigidly rotated by a random rotation."""
    rotation = Rotation.random(random_state=seed).as_matrix()
    out = atoms.copy()
    out.positions = atoms.positions @ rotation.T
    if atoms.cell.rank:
        out.set_cell(np.asarray(atoms.cell[:]) @ rotation.T, scale_atoms=False)
    return out


@pytest.fixture
def rotate():
    """``rotate(atoms, seed)``: a randomly rotated copy."""
    return rotated


@pytest.fixture(scope="session")
def model():
    """The model shipped with the package, or the one CRYSTALFACE_TEST_MODEL names (loaded once)."""
    import os

    from crystalface import load_model

    return load_model(os.environ.get("CRYSTALFACE_TEST_MODEL"))
