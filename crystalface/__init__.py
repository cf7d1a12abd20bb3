"""crystalface: robust crystal-structure classification from two-dimensional diffraction fingerprints."""

from .cell import StructureError, primitive_lattice, standard_cell
from .cluster import cluster
from .defects import displace, vacancies
from .fingerprint import DF2D, fingerprint, fingerprint_reference
from .scaling import scale

__version__ = "0.1.0"
