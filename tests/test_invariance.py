"""What the method guarantees, as properties (hypothesis): invariances of fingerprint and label, determinism.

For pristine real crystals (``crystalface.examples.REAL_CRYSTALS``), the fingerprint and the label do
not depend on a rigid rotation, a translation, the order of the atoms, or the cell the crystal is given
in (primitive, conventional, any supercell). Measured maximum difference of the fingerprint over
those transformations: 7.7e-7 (float32 rounding, on images in [0, 1]); the tolerances below leave a
factor ~10 (docs/reliability.md). The same input gives bit-identical fingerprints and probabilities
run to run, in one process or another, with one worker or several.

The model is the shipped one; set CRYSTALFACE_TEST_MODEL=/path/to/model.safetensors to test another.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
from ase import Atoms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from crystalface import Descriptor, classify, compute_fingerprints
from crystalface.examples import REAL_CRYSTALS
from crystalface.model import _default_path

#: Largest allowed difference of any fingerprint pixel (images are min-max normalised to [0, 1]).
FINGERPRINT_TOL = 1e-5
#: Largest allowed difference of any class probability.
PROBABILITY_TOL = 1e-5

SETTINGS = settings(max_examples=10, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])




@lru_cache(maxsize=None)
def reference(index: int) -> np.ndarray:
    """Fingerprint of crystal ``index`` from its primitive cell as built (the reference orientation)."""
    return Descriptor()(REAL_CRYSTALS[index].primitive())


# ---------------------------------------------------------------------------------------------
# strategies

crystals = st.integers(0, len(REAL_CRYSTALS) - 1)
quaternions = st.tuples(*[st.floats(-1, 1)] * 4).filter(lambda q: np.linalg.norm(q) > 0.1)
translations = st.tuples(*[st.floats(-100, 100)] * 3)
repeats = st.tuples(*[st.integers(1, 3)] * 3)
seeds = st.integers(0, 2**32 - 1)


def cell_choice(index: int, choice: str, repeat=(2, 2, 2)) -> Atoms:
    crystal = REAL_CRYSTALS[index]
    if choice == "primitive":
        return crystal.primitive()
    if choice == "conventional":
        return crystal.conventional()
    return crystal.conventional().repeat(repeat)


def rotate(atoms: Atoms, quaternion) -> Atoms:
    rotation = Rotation.from_quat(quaternion).as_matrix()
    out = atoms.copy()
    out.positions = atoms.positions @ rotation.T
    out.set_cell(np.asarray(atoms.cell[:]) @ rotation.T, scale_atoms=False)
    return out


def translate(atoms: Atoms, vector) -> Atoms:
    out = atoms.copy()
    out.positions += np.asarray(vector)
    return out


def permute(atoms: Atoms, seed: int) -> Atoms:
    return atoms[np.random.default_rng(seed).permutation(len(atoms))]


def assert_same(model, index: int, atoms: Atoms):
    image = Descriptor()(atoms)
    diff = float(np.abs(image - reference(index)).max())
    assert diff <= FINGERPRINT_TOL, f"{REAL_CRYSTALS[index].name}: fingerprint differs by {diff:.2e}"
    p, p_ref = model.predict_proba(np.stack([image, reference(index)]))
    assert model.classes[int(np.argmax(p))] == REAL_CRYSTALS[index].label
    assert np.abs(p - p_ref).max() <= PROBABILITY_TOL


# ---------------------------------------------------------------------------------------------
# invariances


@SETTINGS
@given(index=crystals, quaternion=quaternions, choice=st.sampled_from(["primitive", "conventional"]))
def test_rigid_rotation(model, index, quaternion, choice):
    assert_same(model, index, rotate(cell_choice(index, choice), quaternion))


@SETTINGS
@given(index=crystals, vector=translations, choice=st.sampled_from(["primitive", "conventional"]))
def test_translation(model, index, vector, choice):
    assert_same(model, index, translate(cell_choice(index, choice), vector))


@SETTINGS
@given(index=crystals, seed=seeds, repeat=repeats)
def test_permutation_of_the_atoms(model, index, seed, repeat):
    assert_same(model, index, permute(cell_choice(index, "supercell", repeat), seed))


@SETTINGS
@given(index=crystals, choice=st.sampled_from(["primitive", "conventional", "supercell"]), repeat=repeats)
def test_cell_choice(model, index, choice, repeat):
    assert_same(model, index, cell_choice(index, choice, repeat))


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(index=crystals, choice=st.sampled_from(["primitive", "conventional", "supercell"]), repeat=repeats,
       quaternion=quaternions, vector=translations, seed=seeds)
def test_all_at_once(model, index, choice, repeat, quaternion, vector, seed):
    atoms = translate(rotate(permute(cell_choice(index, choice, repeat), seed), quaternion), vector)
    assert_same(model, index, atoms)


def test_every_crystal_in_every_cell_is_labelled_right_through_classify(model):
    structures = [rotate(cell_choice(i, choice), (0.3, -0.2, 0.5, 0.8))
                  for i in range(len(REAL_CRYSTALS)) for choice in ("primitive", "conventional", "supercell")]
    predictions = classify(structures, model=model)
    assert [p.label for p in predictions] == [c.label for c in REAL_CRYSTALS for _ in range(3)]
    assert all(p.confident for p in predictions)


# ---------------------------------------------------------------------------------------------
# determinism


def _structures():
    rng = np.random.default_rng(7)
    out = []
    for i, crystal in enumerate(REAL_CRYSTALS):
        atoms = crystal.conventional().repeat(3)
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)  # noisy: no symmetry to hide behind
        out.append(atoms)
    return out


def test_same_input_gives_bit_identical_fingerprints_whatever_the_workers_and_batches():
    structures = _structures()
    a, _ = compute_fingerprints(structures, workers=1)
    b, _ = compute_fingerprints(structures, workers=1)
    c, _ = compute_fingerprints(structures, workers=2, chunk_size=3)
    d, _ = compute_fingerprints(structures[::-1], workers=1, chunk_size=5)
    assert a.tobytes() == b.tobytes() == c.tobytes() == d[::-1].tobytes()


def test_same_input_gives_bit_identical_predictions_run_to_run(model):
    structures = _structures()
    first = classify(structures, model=model)
    second = classify(structures, model=model)
    assert [(p.probabilities, p.score, p.confident) for p in first] == [(p.probabilities, p.score, p.confident) for p in second]


def test_probabilities_depend_on_the_batch_only_below_the_tolerance(model):
    """Alone or in a batch, the network's convolutions may sum in another order (~1e-7)."""
    structures = _structures()
    batch = classify(structures, model=model)
    alone = [classify(s, model=model) for s in structures]
    for p, q in zip(batch, alone):
        assert p.label == q.label and p.confident == q.confident
        assert max(abs(p.probabilities[k] - q.probabilities[k]) for k in p.probabilities) <= PROBABILITY_TOL


_SCRIPT = """
import json, sys, warnings
import numpy as np
warnings.simplefilter("ignore")
from crystalface import Descriptor, load_model
from crystalface.examples import REAL_CRYSTALS
atoms = REAL_CRYSTALS[int(sys.argv[2])].conventional().repeat(2)
image = Descriptor()(atoms)
p = load_model(sys.argv[1]).predict_proba(image[None])[0]
print(json.dumps({"image": image.tobytes().hex(), "p": [float(x).hex() for x in p]}))
"""


def test_same_input_gives_bit_identical_output_in_another_process(model, tmp_path):
    path = Path(os.environ.get("CRYSTALFACE_TEST_MODEL", _default_path()))
    index = 6  # beta-Sn: four atoms in the conventional cell, two in the primitive
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(path), str(index)], capture_output=True, text=True,
                         check=True, timeout=120)
    there = json.loads(out.stdout)
    image = Descriptor()(REAL_CRYSTALS[index].conventional().repeat(2))
    p = model.predict_proba(image[None])[0]
    assert there["image"] == image.tobytes().hex()
    assert there["p"] == [float(x).hex() for x in p]
