"""The seven structure classes of the paper and the eight space groups they come from."""

from __future__ import annotations

__all__ = ["CLASSES", "SPACE_GROUP_CLASS", "class_of_space_group"]

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


def class_of_space_group(number: int | None) -> str | None:
    """Class of a space group number, or None when it is none of the eight groups.

    >>> class_of_space_group(225), class_of_space_group(62)
    ('fcc', None)
    """
    return SPACE_GROUP_CLASS.get(number) if number is not None else None
