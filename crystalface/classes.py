"""The seven structure classes of the paper and the eight space groups they come from."""

from __future__ import annotations

__all__ = ["BASIS_SITES", "CLASSES", "CUBIC_SIGNATURES", "LATTICE_SYSTEMS", "SPACE_GROUP_CLASS", "SYSTEM_SITES",
           "class_of_space_group"]

#: Class names, in the order of the network's outputs.
CLASSES: tuple[str, ...] = ("bcc", "bct139", "bct141", "diam", "fcc", "hex/rh", "sc")

#: International space-group number -> class (SPEC: hcp 194 and rhombohedral 166 share a class).
SPACE_GROUP_CLASS: dict[int, str] = {
    139: "bct139",
    141: "bct141",
    166: "hex/rh",
    194: "hex/rh",
    221: "sc",
    225: "fcc",
    227: "diam",
    229: "bcc",
}

#: Class -> the numbers of atoms an elemental crystal of that class has in its primitive cell.
#: fcc, bcc, sc (1a / 4a / 2a sites) and bct139 (2a of I4/mmm) have one; diamond (8a of Fd-3m) and
#: beta-Sn (4a of I4_1/amd) two. hex/rh holds the one- to four-site structures of P6_3/mmc and R-3m
#: (alpha-Hg / beta-Po 1, hcp and alpha-As 2, alpha-Sm 3, dhcp, lonsdaleite and graphite 4). Its
#: rare bigger ones (alpha-B, 12 sites) lie outside what the model was trained on (the generator
#: draws one- to four-site prototypes): a structure with more than four sites in its exact
#: primitive cell is never confident (crystalface.confidence.basis_problem).
BASIS_SITES: dict[str, tuple[int, ...]] = {
    "bcc": (1,),
    "bct139": (1,),
    "bct141": (2,),
    "diam": (2,),
    "fcc": (1,),
    "hex/rh": (1, 2, 3, 4),
    "sc": (1,),
}

#: (cubic Bravais lattice, sites per primitive cell) -> the cubic class with that lattice and basis.
#: One atom on a lattice point has the lattice's whole symmetry, so a one-site crystal on a cubic
#: lattice is fcc, bcc or sc; two sites on cF are diamond, the only two-site elemental structure of
#: the eight space groups whose lattice is cubic (alpha-As has two sites on a rhombohedral lattice
#: that is cubic only at c/a = sqrt(6) exactly). A label of a non-cubic class on such a lattice
#: contradicts it (crystalface.confidence.lattice_problem); a one-site one proves its class
#: (crystalface.confidence.lattice_confirms).
CUBIC_SIGNATURES: dict[tuple[str, int], str] = {
    ("cF", 1): "fcc",
    ("cI", 1): "bcc",
    ("cP", 1): "sc",
    ("cF", 2): "diam",
}


#: Class -> the lattice systems its crystals have (crystalface.cell.lattice_system): the holohedries
#: of the eight space groups' lattices (hP of 194, hR of 166 in the rhombohedral setting, tI of 139
#: and 141). A bct or hex/rh crystal's lattice can also be metrically cubic at special c/a or angles;
#: there crystalface.confidence.lattice_problem judges by the basis (CUBIC_SIGNATURES). A label whose
#: class has none of these systems on the lattice found is contradicted by it.
LATTICE_SYSTEMS: dict[str, tuple[str, ...]] = {
    "bcc": ("cubic",),
    "bct139": ("tetragonal",),
    "bct141": ("tetragonal",),
    "diam": ("cubic",),
    "fcc": ("cubic",),
    "hex/rh": ("hexagonal", "rhombohedral"),
    "sc": ("cubic",),
}


#: (class, lattice system) -> the site counts of BASIS_SITES its crystals can have on a lattice of
#: that system, where they are fewer. Every Wyckoff position of P6_3/mmc (194) has an even
#: multiplicity, so an elemental hex/rh crystal on a hexagonal lattice has two or four sites (hcp;
#: dhcp, lonsdaleite, graphite); one or three only on a rhombohedral lattice (R-3m: alpha-Hg and
#: beta-Po 1, alpha-Sm 3). Three sites on a hexagonal lattice are gamma-Se (P3_121), one simple
#: hexagonal (P6/mmm): crystals of no class. crystalface.confidence.lattice_problem judges it.
SYSTEM_SITES: dict[tuple[str, str], tuple[int, ...]] = {
    ("hex/rh", "hexagonal"): (2, 4),
}


def class_of_space_group(number: int | None) -> str | None:
    """Class of a space group number, or None when it is none of the eight groups.

    >>> class_of_space_group(225), class_of_space_group(62)
    ('fcc', None)
    """
    return SPACE_GROUP_CLASS.get(number) if number is not None else None
