"""crystalface: robust crystal-structure classification from two-dimensional diffraction fingerprints.

The pipeline, one public function per step::

    read_structures -> standard_cell -> cluster -> [vacancies / displace] -> scale -> fingerprint
    -> network (load_model) -> classify

>>> from ase.build import bulk
>>> import crystalface
>>> crystalface.classify(bulk("Fe", "bcc", a=2.87)).label
'bcc'
"""

__version__ = "0.1.13"

from typing import TYPE_CHECKING

from .cell import StructureError, primitive_lattice, standard_cell
from .classes import CLASSES
from .classify import Prediction, classify
from .cluster import cluster
from .defects import displace, vacancies
from .fingerprint import DF2D, fingerprint, fingerprint_reference
from .io import Entry, read_structures
from .pipeline import Descriptor, compute_fingerprints
from .scaling import scale

#: Names of the one module that imports PyTorch (~1-2 s), imported when one of them is first used
#: (PEP 562): `crystalface --help`, a usage error or `import crystalface` do not pay for it, and
#: `from crystalface import load_model` works as before. (Only these: a lazy name equal to a
#: submodule's, such as `classify`, would become the module once the submodule is imported.)
_LAZY = {"Model": "model", "ModelError": "model", "load_model": "model"}

__all__ = [
    "CLASSES", "DF2D", "Descriptor", "Entry", "Model", "ModelError", "Prediction", "StructureError",
    "classify", "cluster", "compute_fingerprints", "displace", "fingerprint", "fingerprint_reference",
    "load_model", "primitive_lattice", "read_structures", "scale", "standard_cell", "vacancies",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'crystalface' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # the next look-up is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see
    from .model import Model, ModelError, load_model
