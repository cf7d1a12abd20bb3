"""``crystalface demo``: real crystals, pristine and defective, classified by the shipped model."""

from __future__ import annotations

import time

from .classify import classify
from .defects import displace, vacancies
from .examples import REAL_CRYSTALS, random_rotation, supercell_near

__all__ = ["demo_structures", "run_demo"]

#: The defects of the demo: name -> function of (atoms, seed).
DEFECTS = {
    "pristine": lambda atoms, seed: atoms,
    "25 % vacancies": lambda atoms, seed: vacancies(atoms, 0.25, seed=seed),
    "sigma 0.04 A": lambda atoms, seed: displace(atoms, 0.04, seed=seed),
}


def demo_structures(seed: int = 0):
    """Randomly rotated ~256-atom periodic supercells of real crystals, pristine and defective.

    Yields ``(crystal, defect, atoms)``; the defects are made in the periodic supercell itself.
    """
    for i, crystal in enumerate(REAL_CRYSTALS):
        base = random_rotation(supercell_near(crystal.conventional(), 256), seed=seed + i)
        for j, (name, make) in enumerate(DEFECTS.items()):
            atoms = make(base, seed + 100 * i + j)
            atoms.info["source"] = f"{crystal.name} ({crystal.label})"
            atoms.info["index"] = j
            yield crystal, name, atoms


def run_demo(seed: int = 0) -> int:
    """Print the demo table; return 0 when every structure got its true class, else 1."""
    items = list(demo_structures(seed))
    start = time.perf_counter()
    predictions = classify([atoms for _, _, atoms in items], workers=None)
    elapsed = time.perf_counter() - start
    header = ["crystal (true class)", "atoms"] + list(DEFECTS)
    rows, wrong = {}, 0
    for (crystal, defect, atoms), p in zip(items, predictions):
        key = f"{crystal.name} ({crystal.label})"
        rows.setdefault(key, [key, str(len(atoms))])
        ok = p.label == crystal.label
        wrong += not ok
        rows[key].append(f"{p.label} {p.probability:.2f}" + ("" if ok else " WRONG"))
    widths = [28, 6, 16, 16, 16]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows.values():
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    print(f"\n{len(items) - wrong} of {len(items)} right; {len(items)} randomly rotated periodic supercells "
          f"classified in {elapsed:.1f} s (class and probability of it).")
    return 0 if wrong == 0 else 1
