"""crystalface-periodic with the standard cell and cluster of commit 0e70e46 patched in: one lattice search
(one reference atom, floor 0.55, 64 scored atoms), no basis refit, and balls of n_atoms atoms.

    python benchmarks/robustness_periodic/before_0e70e46.py

The "before" row of the README; the levels where the change matters, the default seed and subsample.
"""
import crystalface.cell as C
from crystalface.pipeline import Descriptor
from crystalface.cluster import _cluster
C._SPARSE_BELOW = 0.0
C._SUPERCELL_ATOMS = 10**9
C._refit_basis = lambda basis, translations, rounds=2: basis
Descriptor.cluster = lambda self, atoms: _cluster(C.standard_cell(atoms), self.n_atoms, None)
from crystalface.evaluation.robustness import run_robustness, parse_levels  # noqa: E402 (after the patches)
r = run_robustness(parse_levels(["0.1", "0.15", "0.2", "0.25"], ["25", "40", "50", "60", "70"], []), methods=["crystalface-periodic"],
                   output="benchmarks/robustness_periodic/before_0e70e46", progress=False,
                   command="python benchmarks/robustness_periodic/before_0e70e46.py")
for lv in r["levels"]:
    print(lv["label"], lv["methods"]["crystalface-periodic"]["accuracy"])
