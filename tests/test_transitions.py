"""The structural-transition experiments at tiny sizes: geometry of each path, the JSON they write, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from ase.build import bulk

from crystalface.classes import CLASSES
from crystalface.cli import main
from crystalface.evaluation.transitions import (
    BCC_SC_FRAMES,
    SPECIAL_ANGLES,
    _fraction_gated,
    body_centre_mask,
    crossing_interval,
    first_crossing,
    remove_body_centres,
    rhombohedral_lattice,
    run_amorphous,
    run_bcc_sc,
    run_rhombohedral,
)
from crystalface.examples import REAL_CRYSTALS, random_rotation
from crystalface.model import Model
from crystalface.pipeline import Descriptor
from crystalface.scaling import nearest_neighbour_distance

CRYSTALS = {c.name: c for c in REAL_CRYSTALS}
A_FE = CRYSTALS["Fe"].cellpar[0]




def _nn(atoms) -> float:
    return nearest_neighbour_distance(atoms, "mean")


# --- helpers ------------------------------------------------------------------------------------

def test_first_crossing():
    assert first_crossing([0, 1, 2], [-1, -1, 1]) == pytest.approx(1.5)
    assert first_crossing([0, 1, 2], [1, -1, 1]) == 0
    assert first_crossing([0, 1, 2], [-1, -1, -1]) is None
    assert first_crossing([0.0, 0.1], [0.2, 0.8], level=0.5) == pytest.approx(0.05)


def test_crossing_interval_brackets_the_crossing_and_narrows_with_more_realisations():
    x = np.linspace(0.0, 1.0, 21)
    # realisations identical: every replicate crosses where the mean does, the interval is that point
    same = np.repeat((x - 0.42)[:, None], 5, axis=1)
    point = first_crossing(x, same.mean(axis=1))
    assert crossing_interval(x, same) == pytest.approx((point, point))
    # a curve that never rises above 0, or only for some draws
    assert crossing_interval(x, -np.ones((21, 5))) == (None, None)
    rare = -np.ones((21, 20))
    rare[-1, 0] = 100.0  # the last step crosses only in replicates that draw realisation 0 (~64 %)
    lo, hi = crossing_interval(x, rare)
    assert 0.95 < lo < 1.0 and hi is None
    # noisy realisations around a straight line: the interval holds the mean's crossing, and is about
    # sqrt(16) = 4 times narrower with 16 times the realisations
    rng = np.random.default_rng(0)
    widths = []
    for n in (10, 160):
        values = (x - 0.5)[:, None] + rng.normal(0.0, 0.2, size=(21, n))
        lo, hi = crossing_interval(x, values)
        assert lo < first_crossing(x, values.mean(axis=1)) < hi
        widths.append(hi - lo)
    assert 2.5 < widths[0] / widths[1] < 6.5
    # a failed realisation (NaN) is left out of its step's mean
    with_failure = same.copy()
    with_failure[3, 0] = np.nan
    assert crossing_interval(x, with_failure) == pytest.approx((point, point))
    # any crossing of the mean of vector-valued realisations: where the second component first leads
    pairs = np.stack([np.zeros_like(same), same], axis=2)  # (steps, realisations, 2)
    assert crossing_interval(x, pairs, lambda x, m: first_crossing(x, m[:, 1] - m[:, 0])) == pytest.approx((point, point))


# --- bcc -> sc ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [None, 3])
def test_body_centres_of_a_bcc_cluster_in_any_orientation(seed):
    atoms = CRYSTALS["Fe"].primitive() if seed is None else random_rotation(CRYSTALS["Fe"].conventional(), seed)
    cluster = Descriptor().cluster(atoms)
    mask = body_centre_mask(cluster)
    assert len(cluster) == 259 and mask.sum() == 136  # the corner sublattice holds the centre atom
    assert not mask[np.argmin(np.linalg.norm(cluster.positions, axis=1))]
    # each sublattice alone is simple cubic with the bcc lattice constant
    for sub in (cluster[mask], cluster[~mask]):
        assert _nn(sub) == pytest.approx(A_FE, rel=1e-6)
    assert _nn(cluster) == pytest.approx(A_FE * math.sqrt(3) / 2, rel=1e-6)


def test_body_centre_mask_refuses_other_lattices():
    with pytest.raises(ValueError, match="not a bcc cluster"):
        body_centre_mask(Descriptor().cluster(bulk("Cu", "fcc", a=3.6)))


def test_removing_body_centres():
    cluster = Descriptor().cluster(CRYSTALS["Fe"].primitive())
    centres = np.flatnonzero(body_centre_mask(cluster))
    assert len(remove_body_centres(cluster, centres, 0.0)) == len(cluster)
    half = remove_body_centres(cluster, centres, 0.5, seed=1)
    assert len(half) == len(cluster) - 68
    assert not np.array_equal(half.positions, remove_body_centres(cluster, centres, 0.5, seed=2).positions)
    sc = remove_body_centres(cluster, centres, 1.0)
    assert len(sc) == len(cluster) - len(centres)
    # no body centre left: every remaining atom has integer cubic coordinates (a sc lattice)
    assert _nn(sc) == pytest.approx(A_FE, rel=1e-6)
    assert np.allclose(np.sort(np.linalg.norm(sc.positions, axis=1))[1:7], A_FE)


def test_bcc_sc_tiny_run(model, tmp_path):
    r = run_bcc_sc(steps=3, realisations=2, model=model, output=tmp_path, workers=1, progress=False, command="test")
    on_disk = json.loads((tmp_path / "bcc-sc.json").read_text())
    assert (tmp_path / "bcc-sc.png").read_bytes()[:4] == b"\x89PNG"
    assert on_disk["crossing_fraction"] == r["crossing_fraction"]
    for key in ("experiment", "command", "model", "descriptor", "seed", "crystal", "fractions", "realisations",
                "crossing_fraction", "bcc_until", "sc_from", "interval", "frames", "total_seconds"):
        assert key in on_disk, key
    for frame, intervals in on_disk["interval"].items():
        assert set(intervals) == {"crossing_fraction", "bcc_until", "sc_from"}
        for key, (lo, hi) in intervals.items():
            point = on_disk[key][frame]
            assert point is None or (lo is not None and lo <= point and (hi is None or point <= hi)), (frame, key)
    assert on_disk["fractions"] == [0.0, 0.5, 1.0] and set(on_disk["frames"]) == set(BCC_SC_FRAMES)
    for frame, rec in on_disk["frames"].items():
        assert rec["n_removed"] == [0, round(rec["body_centre_atoms"] / 2), rec["body_centre_atoms"]], frame
        mean = np.array([rec["probabilities"]["mean"][c] for c in CLASSES])  # (classes, steps)
        assert np.allclose(mean.sum(axis=0), 1, atol=1e-4) and rec["failures"] == 0
        assert all(s == 0 for s in (rec["probabilities"]["std"][c][0] for c in CLASSES))  # 0 %: nothing random
    assert on_disk["frames"]["bcc"]["atoms"] == 259 and on_disk["frames"]["periodic"]["atoms"] == 250
    assert on_disk["frames"]["periodic"]["body_centre_atoms"] == 125
    # at 0 % the bcc and periodic frames classify the pristine crystal as the pipeline does
    pristine = model.predict_proba(model.descriptor(CRYSTALS["Fe"].primitive())[None])[0]
    for frame in ("bcc", "periodic"):
        mean = on_disk["frames"][frame]["probabilities"]["mean"]
        np.testing.assert_allclose([mean[c][0] for c in CLASSES], pristine, atol=1e-5)


# --- rhombohedral ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, reference", [("bcc", bulk("Po", "bcc", a=2 * 3.0 / math.sqrt(3))),
                                            ("sc", bulk("Po", "sc", a=3.0)),
                                            ("fcc", bulk("Po", "fcc", a=3.0 * math.sqrt(2)))])
def test_rhombohedral_lattice_is_the_cubic_lattice_at_the_special_angles(cls, reference):
    atoms = rhombohedral_lattice(SPECIAL_ANGLES[cls])
    assert len(atoms) == 1 and atoms.cell.cellpar()[3] == pytest.approx(SPECIAL_ANGLES[cls])
    d = Descriptor()
    np.testing.assert_allclose(d(atoms), d(reference), atol=1e-4)  # the same fingerprint as the cubic crystal
    assert not np.allclose(d(rhombohedral_lattice(SPECIAL_ANGLES[cls] + 2.0)), d(reference), atol=1e-2)


def test_rhombohedral_tiny_run(model, tmp_path):
    r = run_rhombohedral(n_angles=5, fine_halfwidth=0.1, fine_step=0.05, model=model, output=tmp_path, workers=1,
                         progress=False, command="test")
    on_disk = json.loads((tmp_path / "rhombohedral.json").read_text())
    assert (tmp_path / "rhombohedral.png").read_bytes()[:4] == b"\x89PNG"
    coarse = on_disk["coarse"]["angles_degrees"]
    for angle in (110.0, 95.0, 80.0, 65.0, 50.0, 109.4712206, 90.0, 60.0, r["beta_po"]["angle_degrees"]):
        assert any(abs(a - angle) < 1e-6 for a in coarse), angle
    assert coarse == sorted(coarse, reverse=True) and len(coarse) == 9
    assert set(on_disk["fine"]) == {"bcc", "sc", "fcc"}
    for cls, scan in on_disk["fine"].items():
        assert len(scan["angles_degrees"]) == 5 and scan["angles_degrees"][2] == pytest.approx(SPECIAL_ANGLES[cls])
        assert set(scan["probabilities"]) == set(CLASSES) and len(scan["labels"]) == 5
    for cls, w in on_disk["windows"].items():
        assert set(w) >= {"special_degrees", "label_at_special", "min_degrees", "max_degrees", "width_degrees"}
        if w["label_at_special"] == cls:
            assert w["min_degrees"] <= SPECIAL_ANGLES[cls] <= w["max_degrees"]
    assert on_disk["beta_po"]["angle_degrees"] == pytest.approx(98.2, abs=0.1)
    assert sum(run["n"] for run in on_disk["runs"]) == 9 + 3 * 5 - 3  # the special angles are in both grids
    assert on_disk["failures"] == 0


# --- amorphous ------------------------------------------------------------------------------------

def test_amorphous_tiny_run(model, tmp_path):
    r = run_amorphous(["Cu", "beta-Sn"], steps=3, realisations=2, model=model, output=tmp_path, workers=1,
                      progress=False, command="test")
    on_disk = json.loads((tmp_path / "amorphous.json").read_text())
    assert (tmp_path / "amorphous.png").read_bytes()[:4] == b"\x89PNG"
    assert on_disk["lindemann"] == [0.0, 0.2, 0.4] and list(on_disk["crystals"]) == ["Cu", "beta-Sn"]
    for name, rec in on_disk["crystals"].items():
        for key in ("class", "nn_distance_angstrom", "sigma_angstrom", "p_true", "accuracy", "entropy_nats",
                    "entropy_normalised", "probabilities", "collapse", "collapse_in_melting_range"):
            assert key in rec, key
        assert set(rec["collapse"]) == {"p_true_below_half", "accuracy_below_half", "entropy_above_half_max",
                                        "score_below_threshold"}
        for key, (lo, hi) in rec["collapse_interval"].items():
            crossing = rec["collapse"][key]
            assert crossing is None or (lo is not None and lo <= crossing and (hi is None or crossing <= hi)), key
        assert len(rec["confidence_score"]) == 3 and rec["confidence_score"][0] > 0.5  # L = 0: a confident crystal
        # the score is P(label) x crystallinity, or 0 past the novelty limit: never above the crystallinity
        assert all(s <= c + 1e-6 for s, c in zip(rec["confidence_score"], rec["crystallinity"]))
        assert rec["crystallinity"][0] > 0.9 and rec["crystallinity"][-1] < 0.1  # crystal at L = 0, amorphous at 0.4
        assert all(0 <= f <= 1 for f in rec["novelty_above_limit"]) and rec["novelty_above_limit"][0] == 0
        assert rec["sigma_angstrom"][-1] == pytest.approx(0.4 * rec["nn_distance_angstrom"], rel=1e-5)
        # L = 0 is the pristine crystal: same probabilities as classifying it directly, no spread
        pristine = model.predict_proba(model.descriptor(CRYSTALS[name].primitive())[None])[0]
        assert [rec["probabilities"][c][0] for c in CLASSES] == pytest.approx(list(pristine), abs=1e-5)
        assert rec["p_true"]["std"][0] == 0
        entropy = -sum(p * math.log(p) for p in pristine if p > 0)
        assert rec["entropy_nats"][0] == pytest.approx(entropy, abs=1e-4)
        assert 0 <= min(rec["entropy_normalised"]) and max(rec["entropy_normalised"]) <= 1 + 1e-6
    assert r["crystals"]["Cu"]["nn_distance_angstrom"] == pytest.approx(3.615 / math.sqrt(2), rel=1e-5)


def test_fraction_gated_counts_only_the_classified_realisations():
    nan = float("nan")
    novelty = np.array([3.0, 1.0, nan, 5.0])  # step 0: realisations 0, 1; step 1: 2 (failed), 3
    scores = np.array([0.0, 0.9, nan, 0.0])
    assert _fraction_gated(novelty, scores, 2, 2).tolist() == [0.5, 1.0]
    assert _fraction_gated(np.full(4, nan), scores, 2, 2).tolist() == [0.0, 0.0]  # a model without novelty statistics


# --- command line ---------------------------------------------------------------------------------

def test_experiment_commands(model, tmp_path, capsys):
    weights = [] if "weights_sha256" in model.card else [
        "--model", str(Model(network=model.network, card=dict(model.card)).save(tmp_path / "m.safetensors"))]
    common = ["-o", str(tmp_path), "--workers", "1", *weights]
    assert main(["experiment", "bcc-sc", "--steps", "2", "--realisations", "1", "--frames", "bcc", *common]) == 0
    assert main(["experiment", "rhombohedral", "--angles", "2", "--fine-halfwidth", "0", *common]) == 0
    assert main(["experiment", "amorphous", "--crystals", "Fe", "--steps", "2", "--realisations", "1", *common]) == 0
    for name in ("bcc-sc", "rhombohedral", "amorphous"):
        assert json.loads((tmp_path / f"{name}.json").read_text())["command"].startswith("crystalface")
        assert (tmp_path / f"{name}.png").is_file()
    assert main(["experiment", "amorphous", "--crystals", "Unobtainium", *common]) == 2
    assert "unknown crystal" in capsys.readouterr().err


def test_numbers_do_not_depend_on_the_workers(model):
    kwargs = dict(steps=2, realisations=40, model=model, output=None, progress=False)  # 80 structures: 3 work units
    one, two = run_amorphous(["Fe"], workers=1, **kwargs), run_amorphous(["Fe"], workers=2, **kwargs)
    for cls in CLASSES:  # same structures; only float rounding of 1 vs 2 torch threads may differ
        assert one["crystals"]["Fe"]["probabilities"][cls] == pytest.approx(two["crystals"]["Fe"]["probabilities"][cls], abs=1e-5)
    assert one["crystals"]["Fe"]["p_true"]["std"][1] > 0  # the realisations differ from each other


def test_shipped_model_names_the_special_angles(model):
    """The paper's acceptance on the rhombohedral path, at the five angles that matter (shipped model only)."""
    if "weights_sha256" not in model.card:
        pytest.skip("no shipped model")
    r = run_rhombohedral(n_angles=2, fine_halfwidth=0, model=model, output=None, workers=1, progress=False)
    assert {cls: w["label_at_special"] for cls, w in r["windows"].items()} == {"bcc": "bcc", "sc": "sc", "fcc": "fcc"}
    assert r["beta_po"]["label"] == "hex/rh"
    assert r["coarse"]["labels"][-1] == "hex/rh"  # 50 degrees (110 is still inside the bcc window)
