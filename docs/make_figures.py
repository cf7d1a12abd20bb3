"""Make the pictures of docs/method.md with the package itself.

    python docs/make_figures.py            # writes docs/fingerprints.png
"""

from __future__ import annotations

from pathlib import Path

from crystalface import Descriptor
from crystalface.examples import REAL_CRYSTALS
from crystalface.plotting import save_gallery

HERE = Path(__file__).resolve().parent


def main() -> None:
    descriptor = Descriptor()
    images = [descriptor(crystal.primitive()) for crystal in REAL_CRYSTALS]
    titles = [f"{crystal.label}: {crystal.name}" for crystal in REAL_CRYSTALS]
    path = save_gallery(images, titles, HERE / "fingerprints.png", columns=4)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
