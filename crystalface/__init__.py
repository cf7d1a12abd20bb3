"""crystalface: robust crystal-structure classification from two-dimensional diffraction fingerprints.

The pipeline, one public function per step::

    read_structures -> standard_cell -> cluster -> [vacancies / displace] -> scale -> fingerprint
    -> network (load_model) -> classify

>>> from ase.build import bulk
>>> import crystalface
>>> crystalface.classify(bulk("Fe", "bcc", a=2.87)).label
'bcc'
"""

__version__ = "0.1.1"

from .cell import StructureError, primitive_lattice, standard_cell
from .classes import CLASSES
from .classify import Prediction, classify
from .cluster import cluster
from .defects import displace, vacancies
from .fingerprint import DF2D, fingerprint, fingerprint_reference
from .io import Entry, read_structures
from .model import Model, ModelError, load_model
from .pipeline import Descriptor, compute_fingerprints
from .scaling import scale

__all__ = [
    "CLASSES", "DF2D", "Descriptor", "Entry", "Model", "ModelError", "Prediction", "StructureError",
    "classify", "cluster", "compute_fingerprints", "displace", "fingerprint", "fingerprint_reference",
    "load_model", "primitive_lattice", "read_structures", "scale", "standard_cell", "vacancies",
]
