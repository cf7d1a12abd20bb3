"""The robustness benchmark's harness: levels, defects, scoring, baselines and a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk

from crystalface.classes import CLASSES
from crystalface.evaluation.robustness import (
    Level,
    _wrong_summary,
    baseline_space_group,
    default_levels,
    defect,
    parse_levels,
    run_robustness,
    score,
    wrong_structures,
)
from crystalface.examples import supercell_near




# --- levels -------------------------------------------------------------------------------------

def test_parse_levels_units_order_and_keys():
    levels = parse_levels(["0.01,0.1"], ["50%", "70"], ["30:0.08", (1, 0.001)])
    assert [lv.key for lv in levels] == ["pristine", "sigma0.01", "sigma0.1", "vac50", "vac70", "vac30+sigma0.08", "vac1+sigma0.001"]
    assert levels[3] == Level(vacancy=0.5)  # percent on the command line, fraction inside
    assert levels[5] == Level(vacancy=0.3, sigma=0.08) and levels[5].kind == "combined"
    assert [lv.kind for lv in levels[:4]] == ["pristine", "displacement", "displacement", "vacancies"]
    assert parse_levels(["0.1", "0.1"], pristine=False) == [Level(sigma=0.1)]  # duplicates dropped


@pytest.mark.parametrize("kwargs", [{"vacancies": ["100"]}, {"vacancies": ["0"]}, {"sigmas": ["-0.1"]},
                                    {"sigmas": ["abc"]}, {"combined": ["30"]}, {"combined": ["30:0"]}])
def test_parse_levels_rejects_bad_input(kwargs):
    with pytest.raises(ValueError):
        parse_levels(**kwargs)


def test_default_levels_are_the_issues():
    levels = default_levels()
    assert len(levels) == 1 + 15 + 14 + 5
    assert Level(sigma=0.3) in levels and Level(vacancy=0.8) in levels and Level(vacancy=0.3, sigma=0.08) in levels


# --- defects ------------------------------------------------------------------------------------

def test_defects_are_deterministic_per_structure_and_level():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(4)
    level = Level(vacancy=0.3, sigma=0.05)
    a, b = defect(atoms, level, seed=1000, index=3), defect(atoms, level, seed=1000, index=3)
    assert len(a) == round(0.7 * len(atoms))
    np.testing.assert_array_equal(a.positions, b.positions)
    # another structure index, seed or level gives other defects
    for other in (defect(atoms, level, 1000, 4), defect(atoms, level, 1001, 3), defect(atoms, Level(0.3, 0.06), 1000, 3)):
        assert len(other) == len(a) and not np.allclose(other.positions, a.positions)
    assert np.array_equal(defect(atoms, Level(), 1000, 3).positions, atoms.positions)


# --- scoring ------------------------------------------------------------------------------------

def test_score_on_hand_made_predictions():
    true = ["fcc", "fcc", "fcc", "bcc", "bcc", "sc"]
    pred = ["fcc", "bcc", None, "bcc", "bcc", "hexagonal?"]
    s = score(true, pred, classes=("bcc", "fcc", "sc"))
    assert s["n"] == 6 and s["correct"] == 3
    assert s["accuracy"] == 50.0
    assert s["per_class"]["fcc"] == {"n": 3, "accuracy": pytest.approx(33.333)}
    assert s["per_class"]["bcc"]["accuracy"] == 100.0 and s["per_class"]["sc"]["accuracy"] == 0.0
    assert s["confusion"]["predicted"] == ["bcc", "fcc", "sc", "other"]
    assert s["confusion"]["matrix"] == [[2, 0, 0, 0], [1, 1, 0, 1], [0, 0, 0, 1]]
    # exact binomial 95 % interval of 3 right of 6 (Clopper-Pearson: 11.81-88.19 %), rounded outwards
    assert s["accuracy_interval"] == [11.81, 88.19]
    assert score(["fcc"] * 700, ["fcc"] * 700)["accuracy_interval"] == [99.47, 100.0]
    assert score(["fcc"] * 700, ["fcc"] * 699 + ["bcc"])["accuracy_interval"] == [99.2, 100.0]
    with pytest.raises(ValueError):
        score(["fcc"], [])
    with pytest.raises(ValueError):
        score(["nonsense"], ["fcc"])


# --- baselines ----------------------------------------------------------------------------------

def test_spglib_tight_finds_pristine_fcc_but_not_with_vacancies():
    cell = supercell_near(bulk("Cu", "fcc", a=3.6), 256)
    assert baseline_space_group(cell, "spglib-tight") == 225
    assert baseline_space_group(defect(cell, Level(vacancy=0.1), seed=0, index=0), "spglib-tight") != 225
    with pytest.raises(ValueError):
        baseline_space_group(cell, "findsym")


def test_moyopy_and_loose_spglib_tolerate_small_noise_tight_does_not():
    pytest.importorskip("moyopy")
    noisy = defect(supercell_near(bulk("Fe", "bcc", a=2.87, cubic=True), 128), Level(sigma=0.005), seed=0, index=0)
    assert baseline_space_group(noisy, "moyopy") == 229
    assert baseline_space_group(noisy, "spglib-loose") == 229
    assert baseline_space_group(noisy, "spglib-tight") != 229


# --- end to end ---------------------------------------------------------------------------------

def test_tiny_run_writes_every_output(tmp_path, model):
    levels = parse_levels(["0.05"], ["30"], [])
    results = run_robustness(levels, per_class=2, baseline_per_class=1, seed=1000,
                             methods=["crystalface", "spglib-tight", "moyopy"], model=model,
                             output=tmp_path, workers=1, progress=False, command="test")
    for name in ("results.json", "results.md", "accuracy.png", "confusion_sigma0.05.png", "confusion_vac30.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["command"] == "test" and stored["seed"] == 1000
    assert stored["n_structures"] == 14 and stored["n_baseline_structures"] == 7
    assert stored["test_set"]["class_counts"] == dict.fromkeys(CLASSES, 2)
    assert sum(stored["test_set"]["cell_choices"].values()) == 14
    assert [lv["key"] for lv in stored["levels"]] == ["pristine", "sigma0.05", "vac30"]
    for lv in stored["levels"]:
        cf = lv["methods"]["crystalface"]
        assert cf["n"] == 14 and 0 <= cf["accuracy"] <= 100 and cf["ms_per_structure"] > 0
        assert np.asarray(cf["confusion"]["matrix"]).sum() == 14
        assert lv["methods"]["spglib-tight"]["n"] == 7 and lv["methods"]["moyopy"]["n"] == 7
    # symmetry finders are exact on pristine cells and fail on 30 % vacancies
    assert stored["levels"][0]["methods"]["spglib-tight"]["accuracy"] == 100.0
    assert stored["levels"][0]["methods"]["moyopy"]["accuracy"] == 100.0
    assert stored["levels"][2]["methods"]["spglib-tight"]["accuracy"] == 0.0
    markdown = (tmp_path / "results.md").read_text()
    assert "| crystalface |" in markdown and "| *paper* |" in markdown and "`test`" in markdown
    for lv in stored["levels"]:  # every wrong label is listed
        cf = lv["methods"]["crystalface"]
        assert len(cf["wrong"]) == cf["n"] - cf["correct"]
        assert cf["accuracy_interval"][0] <= cf["accuracy"] <= cf["accuracy_interval"][1]


def test_wrong_structures_are_listed_with_how_they_were_drawn():
    labels = ["fcc", "hex/rh", "hex/rh", "bcc", "diam"]
    infos = [{"prototype": "fcc", "cell_choice": "primitive"},
             {"prototype": "hR1", "cell_choice": "supercell", "alpha_rh": 89.17864},
             {"prototype": "alpha_As", "cell_choice": "conventional", "c_over_a": 2.52, "x": 0.2341},
             {"prototype": "bcc", "cell_choice": "primitive"},
             {"prototype": "diamond", "cell_choice": "primitive"}]
    # the periodic method scores a subsample: indices 0, 1, 2 and 4; index 4 failed
    wrong = wrong_structures(labels, {0: "fcc", 1: "sc", 2: "sc", 4: None}, infos)
    assert wrong == [
        {"index": 1, "label": "hex/rh", "predicted": "sc", "prototype": "hR1", "cell_choice": "supercell", "alpha_rh": 89.1786},
        {"index": 2, "label": "hex/rh", "predicted": "sc", "prototype": "alpha_As", "cell_choice": "conventional",
         "c_over_a": 2.52, "x": 0.2341},
        {"index": 4, "label": "diam", "predicted": None, "prototype": "diamond", "cell_choice": "primitive"},
    ]
    assert len(wrong_structures(labels, {0: "fcc", 1: "sc", 2: "sc", 4: None}, infos, most=2)) == 2
    assert _wrong_summary(wrong, 3) == "hR1 (α 89.18°) → sc; alpha_As (c/a 2.52, x 0.234) → sc; diamond → failed"
    assert _wrong_summary(wrong + wrong, 6) == "hR1 → sc ×2, alpha_As → sc ×2, diamond → failed ×2"
    assert _wrong_summary(wrong[2:] * 4, 4) == "diamond → failed ×4"  # the same structure kind, once
    assert _wrong_summary(wrong, 250) == "hR1 → sc ×1, alpha_As → sc ×1, diamond → failed ×1 (of the first 3)"


def test_crystalface_alone_needs_no_baseline_structures(model):
    """``--methods crystalface`` (how models are compared on the validation seed) with the default baseline subsample."""
    results = run_robustness(parse_levels(["0.05"], pristine=False), per_class=1, baseline_per_class=1, seed=1000,
                             methods=["crystalface"], model=model, output=None, workers=1, progress=False)
    assert results["n_baseline_structures"] == 0
    assert list(results["levels"][0]["methods"]) == ["crystalface"]
    assert results["levels"][0]["methods"]["crystalface"]["n"] == 7


def test_periodic_method_classifies_the_baselines_defective_supercells(model, monkeypatch):
    """crystalface-periodic sees the very structures the finders get, defects made in the periodic supercell."""
    import crystalface.evaluation.robustness as robustness

    seen = []
    real_defect = robustness.defect
    monkeypatch.setattr(robustness, "defect", lambda atoms, *a: seen.append(atoms.pbc.all()) or real_defect(atoms, *a))
    results = run_robustness(parse_levels([], ["50"]), per_class=2, baseline_per_class=1, seed=1000,
                             methods=["crystalface-periodic"], model=model, output=None, workers=1, progress=False)
    assert results["methods"] == ["crystalface-periodic"] and results["n_baseline_structures"] == 7
    assert len(seen) == 14 and all(seen)  # pristine + 50 %, 7 periodic supercells each, no cluster made
    for lv in results["levels"]:
        periodic = lv["methods"]["crystalface-periodic"]
        assert periodic["n"] == 7 and periodic["failures"] == 0 and periodic["ms_per_structure"] > 0
    assert results["levels"][0]["methods"]["crystalface-periodic"]["accuracy"] == 100.0
    assert "crystalface-periodic" in robustness.DEFAULT_METHODS  # the user's path is in every default run


def test_refuses_the_training_seed(model):
    train_seed = model.card["dataset"]["seed"]
    with pytest.raises(ValueError, match="training set"):
        run_robustness(parse_levels(["0.1"]), per_class=1, baseline_per_class=0, seed=train_seed, model=model,
                       output=None, workers=1, progress=False)


def test_worker_processes_give_the_same_answers_as_one(model):
    kwargs = dict(levels=parse_levels(["0.2"], ["70"], pristine=False), per_class=2, baseline_per_class=1, seed=1000,
                  methods=["crystalface", "spglib-loose"], model=model, output=None, progress=False)
    one, two = run_robustness(workers=1, **kwargs), run_robustness(workers=2, chunk_size=3, baseline_chunk_size=2, **kwargs)
    for a, b in zip(one["levels"], two["levels"]):
        for m in ("crystalface", "spglib-loose"):
            assert a["methods"][m]["confusion"] == b["methods"][m]["confusion"]
