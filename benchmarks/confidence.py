"""Calibrate and measure the out-of-distribution flag (``confident`` / ``score``, crystalface.confidence).

Two disjoint sets of pristine structures, neither the training set (seed 0) nor the robustness
benchmark's (seed 1000): ``generate_structures(size, seed=2000)`` calibrates, ``seed=3000`` measures.
From each pristine cluster (``descriptor.cluster``) the script makes

* ``vacancies 25 %``: a quarter of the cluster's atoms removed;
* ``amorphous L=0.3`` / ``L=0.4``: every atom displaced by Gaussian noise of sigma = L x d_nn per axis
  (Lindemann parameter L; d_nn the pristine cluster's nearest-neighbour distance);
* ``random gas``: as many atoms, uniformly random in a ball of the cluster's density;
* ``dimer gas``: molecules of two atoms (bond d_nn), random orientations, centres packed at random
  (a molecular liquid, see :func:`dimer_gas`),

and records the Bragg fraction, the network's maximum probability, the novelty and the score of each. The
calibration fits ``BRAGG_CENTRE`` / ``BRAGG_SLOPE`` (crystallinity 0.99 at the 0.5 % quantile of the
crystals' Bragg fraction, 0.01 at the 99.5 % quantile of the disordered structures') and reports every
rate at the thresholds ``THRESHOLDS`` too, from which ``THRESHOLD`` is chosen (docs/reliability.md says
why 0.5); the measurement then uses the constants
*in crystalface/confidence.py* (not the freshly fitted ones), so the JSON describes the shipped code.
On the measurement seed the script also reports the flagged fraction at every level of the
robustness benchmark (Gaussian noise in Å, vacancies in %) and at Lindemann parameters 0.05-0.25
(hot crystals) on a subset of the structures, at the threshold and at the scanned ones, and checks
the structure-level domain test on the periodic inputs (pristine and 25 %-vacancy supercells), and
the checks of the lattice found (``confidence.basis_problem``, ``confidence.lattice_problem``) on the same subset as periodic supercells with
defects made in them, through the whole pipeline (:func:`basis_rates`).
Last, the crystals of no class (:data:`UNKNOWN_PROTOTYPES` from ../shared/data and A15) go through
the whole pipeline; they should be flagged.

    python benchmarks/confidence.py --model crystalface/models/default.safetensors \\
        --size 700 --levels-size 140 --output benchmarks/confidence.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import torch  # noqa: E402
from ase import Atoms  # noqa: E402

import crystalface  # noqa: E402
from crystalface import confidence, displace, load_model, vacancies  # noqa: E402
from crystalface.cell import LATTICE_FITS  # noqa: E402
from crystalface.dataset import generate_structures  # noqa: E402
from crystalface.evaluation.provenance import command_line  # noqa: E402
from crystalface.examples import supercell_near  # noqa: E402
from crystalface.scaling import nearest_neighbour_distance  # noqa: E402

SIGMAS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.10, 0.15, 0.20, 0.25, 0.30)
VACANCIES = (1, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 75, 80)
LINDEMANN = (0.05, 0.1, 0.15, 0.2, 0.25)
#: Thresholds scanned for the choice of confidence.THRESHOLD.
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
IN_DISTRIBUTION = ("pristine", "vacancies 25 %")
OUT_OF_DISTRIBUTION = ("amorphous L=0.3", "amorphous L=0.4", "random gas", "dimer gas")


def _random_ball(rng, n: int, radius: float) -> np.ndarray:
    points = np.zeros((0, 3))
    while len(points) < n:
        p = rng.uniform(-radius, radius, size=(2 * n, 3))
        points = np.concatenate([points, p[np.linalg.norm(p, axis=1) < radius]])
    return points[:n]


def random_gas(cluster: Atoms, rng) -> Atoms:
    """As many atoms as ``cluster``, uniformly random in a ball of the same volume per atom."""
    radius = np.linalg.norm(cluster.positions - cluster.positions.mean(0), axis=1).max()
    return Atoms(numbers=cluster.numbers, positions=_random_ball(rng, len(cluster), radius))


def dimer_gas(cluster: Atoms, rng) -> Atoms:
    """Diatomic molecules (bond = d_nn) with random orientations, their centres a random packing of
    spheres of diameter 1.5 d_nn at a packing fraction of 0.3 in a ball (a molecular liquid)."""
    d = nearest_neighbour_distance(cluster, "mean")
    n = len(cluster) // 2
    radius = (n * (np.pi / 6) * (1.5 * d) ** 3 / 0.3 / (4 * np.pi / 3)) ** (1 / 3)
    centres = np.zeros((0, 3))
    while len(centres) < n:
        c = _random_ball(rng, 1, radius)
        if len(centres) == 0 or np.linalg.norm(centres - c, axis=1).min() > 1.5 * d:
            centres = np.concatenate([centres, c])
    axes = rng.normal(size=(n, 3))
    axes *= d / 2 / np.linalg.norm(axes, axis=1, keepdims=True)
    positions = np.concatenate([centres + axes, centres - axes])
    return Atoms(numbers=np.full(len(positions), cluster.numbers[0]), positions=positions)


def make_groups(clusters: list[Atoms], seed: int) -> dict[str, list[Atoms]]:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0xC0F,)))
    d = [nearest_neighbour_distance(c, "mean") for c in clusters]
    return {
        "pristine": clusters,
        "vacancies 25 %": [vacancies(c, 0.25, seed=rng) for c in clusters],
        "amorphous L=0.3": [displace(c, 0.3 * di, seed=rng) for c, di in zip(clusters, d)],
        "amorphous L=0.4": [displace(c, 0.4 * di, seed=rng) for c, di in zip(clusters, d)],
        "random gas": [random_gas(c, rng) for c in clusters],
        "dimer gas": [dimer_gas(c, rng) for c in clusters],
    }


def evaluate(model, clusters: list[Atoms], labels: list[str]) -> dict:
    """Bragg fraction, maximum probability, score, confident and right-or-wrong of every cluster."""
    descriptor = model.descriptor
    images = descriptor.fingerprints(clusters)
    proba, novelty = model.predict(images)
    bragg = confidence.bragg_fraction(images, descriptor.df2d)
    if novelty is None:  # a model without novelty statistics
        novelty = np.zeros(len(images))
    score = confidence.score(proba, images, descriptor.df2d, novelty)
    predicted = np.array(model.classes)[proba.argmax(1)]
    return {"bragg": bragg, "p_max": proba.max(1), "novelty": novelty, "score": score,
            "confident": score >= confidence.THRESHOLD, "right": predicted == np.array(labels)}


def _quantiles(values) -> dict:
    q = (0.0, 0.005, 0.01, 0.05, 0.5, 0.95, 0.99, 0.995, 1.0)
    return {f"q{100 * p:g}": round(float(v), 5) for p, v in zip(q, np.quantile(values, q))}


def summary(result: dict) -> dict:
    confident = result["confident"]
    out = {
        "n": int(len(confident)),
        "confident_fraction": round(float(confident.mean()), 5),
        "flagged_fraction": round(float(1 - confident.mean()), 5),
        "accuracy": round(float(result["right"].mean()), 5),
        "accuracy_of_confident": round(float(result["right"][confident].mean()), 5) if confident.any() else None,
        "bragg_fraction": _quantiles(result["bragg"]),
        "p_max": _quantiles(result["p_max"]),
        "novelty": _quantiles(result["novelty"]),
        "novelty_above_1_fraction": round(float((result["novelty"] > 1).mean()), 5),
        "novelty_above_limit_fraction": round(float((result["novelty"] > confidence.NOVELTY_LIMIT).mean()), 5),
        "score": _quantiles(result["score"]),
        "confident_fraction_at_threshold": {f"{t:g}": round(float((result["score"] >= t).mean()), 5) for t in THRESHOLDS},
    }
    return out


def fit_crystallinity(results: dict) -> dict:
    """BRAGG_CENTRE and BRAGG_SLOPE: crystallinity 0.99 at the 0.5 % quantile of the crystals' Bragg
    fraction (pristine and 25 % vacancies), 0.01 at the 99.5 % quantile of the disordered structures'."""
    inside = np.concatenate([results[g]["bragg"] for g in IN_DISTRIBUTION])
    outside = np.concatenate([results[g]["bragg"] for g in OUT_OF_DISTRIBUTION])
    b_in, b_out = float(np.quantile(inside, 0.005)), float(np.quantile(outside, 0.995))
    centre = float(np.sqrt(b_in * b_out))
    slope = float(np.log(99) / np.log(b_in / centre)) if b_in > b_out else None
    return {"bragg_in_q0.5": round(b_in, 5), "bragg_out_q99.5": round(b_out, 5),
            "BRAGG_CENTRE": round(centre, 3), "BRAGG_SLOPE": round(slope, 2) if slope else None}


def clusters_of(model, size: int, seed: int) -> tuple[list[Atoms], list[str], list[Atoms]]:
    pairs = list(generate_structures(size, seed=seed))
    structures = [a for a, _ in pairs]
    return [model.descriptor.cluster(a) for a in structures], [info["label"] for _, info in pairs], structures


def domain_rates(structures: list[Atoms], seed: int) -> dict:
    """Fraction of periodic inputs (pristine, and ~256-atom supercells with 25 % vacancies) the domain test rejects."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0xD0,)))
    pristine = [confidence.domain_problem(a) for a in structures]
    defective = [confidence.domain_problem(vacancies(supercell_near(a, 256), 0.25, seed=rng)) for a in structures]
    return {"pristine_periodic": {"n": len(pristine), "rejected_fraction": float(np.mean([p is not None for p in pristine]))},
            "vacancies_25_periodic": {"n": len(defective),
                                      "rejected_fraction": float(np.mean([p is not None for p in defective]))}}


def level_rates(model, clusters: list[Atoms], labels: list[str], seed: int) -> dict:
    out = {}
    d = [nearest_neighbour_distance(c, "mean") for c in clusters]
    for kind, values in (("sigma_angstrom", SIGMAS), ("vacancies_percent", VACANCIES), ("lindemann", LINDEMANN)):
        out[kind] = {}
        for v in values:
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x1E7, int(v * 1000))))
            if kind == "sigma_angstrom":
                defective = [displace(c, v, seed=rng) for c in clusters]
            elif kind == "lindemann":
                defective = [displace(c, v * di, seed=rng) for c, di in zip(clusters, d)]
            else:
                defective = [vacancies(c, v / 100, seed=rng) for c in clusters]
            r = evaluate(model, defective, labels)
            out[kind][f"{v:g}"] = {"flagged_fraction": round(float(1 - r["confident"].mean()), 4),
                                   "flagged_fraction_at_threshold": {
                                       f"{t:g}": round(float((r["score"] < t).mean()), 4) for t in THRESHOLDS},
                                   "accuracy_of_confident_at_threshold": {
                                       f"{t:g}": round(float(r["right"][r["score"] >= t].mean()), 4)
                                       if (r["score"] >= t).any() else None for t in THRESHOLDS},
                                   "accuracy": round(float(r["right"].mean()), 4),
                                   "accuracy_of_confident": round(float(r["right"][r["confident"]].mean()), 4)
                                   if r["confident"].any() else None}
            print(f"  {kind} {v:g}: flagged {out[kind][f'{v:g}']['flagged_fraction']:.3f}, "
                  f"accuracy {out[kind][f'{v:g}']['accuracy']:.3f}", flush=True)
    return out


#: Defects (vacancy fraction, sigma in Å) made in the periodic ~256-atom supercells of the basis check.
BASIS_LEVELS = ((0.0, 0.0), (0.0, 0.1), (0.0, 0.2), (0.0, 0.3), (0.0, 0.4), (0.25, 0.0), (0.5, 0.0), (0.7, 0.0),
                (0.8, 0.0), (0.3, 0.08))


def basis_rates(model, structures: list[Atoms], labels: list[str], seed: int) -> dict:
    """The checks of the lattice found (confidence.basis_problem and confidence.lattice_problem) on
    periodic inputs of classes they know, through the whole pipeline.

    Each structure as a randomly rotated ~256-atom supercell with the defects of :data:`BASIS_LEVELS`
    made in it (as a user's file holds them). Per level: how many labels the checks take the
    confidence from, split into right labels (their cost) and wrong ones (their gain), also by how the
    lattice found fits the atoms (``crystalface.cell.lattice_fit``) and for the lattice check alone,
    and how many structures had no site count (a lattice with more sites than any class has, or
    none) or no clear basis.
    """
    from crystalface.examples import random_rotation
    from crystalface.pipeline import compute_fingerprints

    out = {}
    for vac, sigma in BASIS_LEVELS:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0xB5, int(vac * 100), int(sigma * 1000))))
        inputs = []
        for a in structures:
            cell = random_rotation(supercell_near(a, 256), seed=rng)
            if vac:
                cell = vacancies(cell, vac, seed=rng)
            if sigma:
                cell = displace(cell, sigma, seed=rng)
            inputs.append(cell)
        images, errors, sites = compute_fingerprints(inputs, model.descriptor, workers=1, return_sites=True)
        ok = [i for i, e in enumerate(errors) if e is None]
        proba, novelty = model.predict(images[ok])
        predicted = [model.classes[int(np.argmax(p))] for p in proba]
        right = np.array([predicted[k] == labels[i] for k, i in enumerate(ok)])
        without, _ = confidence.assess(proba, images[ok], [inputs[i] for i in ok], model.descriptor.df2d, novelty)
        by_lattice = np.array([confidence.lattice_problem(lab, sites[i].sites, sites[i].cubic, sites[i].system) is not None
                               for lab, i in zip(predicted, ok)], dtype=bool)
        by_system = by_lattice & ~np.array([confidence.lattice_problem(lab, sites[i].sites, sites[i].cubic) is not None
                                            for lab, i in zip(predicted, ok)], dtype=bool)
        checked = by_lattice | np.array([confidence.basis_problem(lab, sites[i].sites, sites[i].fit) is not None
                                         for lab, i in zip(predicted, ok)], dtype=bool)
        fit = np.array([sites[i].fit for i in ok])  # how the lattice found fits the atoms (crystalface.cell.lattice_fit)
        key = f"vacancies {100 * vac:g} %, sigma {sigma:g} A"
        out[key] = {"n": len(ok), "right": int(right.sum()), "confident_without_check": int(without.sum()),
                    "flagged_right": int((without & checked & right).sum()),
                    "flagged_wrong": int((without & checked & ~right).sum()),
                    "confident_wrong_left": int((without & ~checked & ~right).sum()),
                    "flagged_right_wrong_by_lattice_check": [int((without & by_lattice & right).sum()),
                                                              int((without & by_lattice & ~right).sum())],
                    # of those, by the lattice system alone (a bct or hex/rh label on a lattice of
                    # another system; cell.lattice_system, 0.1.7)
                    "flagged_right_wrong_by_lattice_system": [int((without & by_system & right).sum()),
                                                               int((without & by_system & ~right).sum())],
                    "sites_unknown_or_above_4": int(sum(sites[i].sites is None or sites[i].sites > 4 for i in ok)),
                    "no_clear_basis": int((fit == "none").sum()),
                    "flagged_right_wrong_by_fit": {f: [int((without & checked & right & (fit == f)).sum()),
                                                       int((without & checked & ~right & (fit == f)).sum())]
                                                   for f in LATTICE_FITS}}
        print(f"  basis check, {key}: {out[key]}", flush=True)
    return out


#: Elemental crystals of /work/shared/data/prototypes whose space group is none of SPEC's eight:
#: no label is right for them, so they should come back not confident.
UNKNOWN_PROTOTYPES = ("BuckledGraphHex", "basecorthAlphaGa", "basecorthAlphaU", "basecorthBlackP", "basecorthMolIod",
                      "facecorthGammaPu", "shex_Sn", "stetBetaNp", "stetGammaN", "trihex_gammaSe")


def a15(symbol: str = "W", a: float = 5.05) -> Atoms:
    """The A15 (beta-W, Cr3Si-type) structure of one element, space group 223."""
    frac = [(0, 0, 0), (0.5, 0.5, 0.5), (0.25, 0.5, 0), (0.75, 0.5, 0), (0, 0.25, 0.5), (0, 0.75, 0.5),
            (0.5, 0, 0.25), (0.5, 0, 0.75)]
    return Atoms(symbol * 8, scaled_positions=frac, cell=[a, a, a], pbc=True)


def unknown_crystals(model, data: Path) -> dict:
    """Full-pipeline predictions for crystals of no class: the out-of-class AFLOW prototypes and A15."""
    from ase.io import read

    from crystalface import classify

    structures, names = [], []
    for name in UNKNOWN_PROTOTYPES:
        files = sorted(data.glob(f"{name}*.in"))
        if files:
            structures.append(read(files[0], format="aims"))
            names.append(files[0].stem)
    structures.append(a15())
    names.append("A15_W (built here)")
    rows = {}
    for name, p in zip(names, classify(structures, model=model)):
        rows[name] = {"label": p.label, "probability": round(p.probability, 4), "novelty": round(p.novelty, 3)
                      if p.novelty is not None else None, "score": round(p.score, 4), "confident": p.confident}
        print(f"  {name:40s} {p.label:7s} p={p.probability:.3f} novelty={rows[name]['novelty']} confident={p.confident}",
              flush=True)
    return {"n": len(rows), "flagged_fraction": round(float(np.mean([not r["confident"] for r in rows.values()])), 4),
            "structures": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model .safetensors (default: the shipped model)")
    parser.add_argument("--size", type=int, default=700, help="pristine structures per seed (default 700)")
    parser.add_argument("--levels-size", type=int, default=140,
                        help="structures of the measurement seed used at each robustness level (default 140; 0: skip)")
    parser.add_argument("--calibration-seed", type=int, default=2000)
    parser.add_argument("--test-seed", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "prototypes"),
                        help="folder of the AFLOW prototype files (default ../shared/data/prototypes)")
    parser.add_argument("-o", "--output", default="benchmarks/confidence.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    start = time.perf_counter()
    model = load_model(args.model)
    weights = Path(args.model).with_suffix(".safetensors") if args.model else None

    results = {}
    for role, seed in (("calibration", args.calibration_seed), ("test", args.test_seed)):
        t = time.perf_counter()
        clusters, labels, structures = clusters_of(model, args.size, seed)
        groups = make_groups(clusters, seed)
        per_group = {name: evaluate(model, cl, labels) for name, cl in groups.items()}
        results[role] = {"seed": seed, "size": args.size,
                         "groups": {name: summary(r) for name, r in per_group.items()},
                         "domain": domain_rates(structures, seed)}
        if role == "calibration":
            results[role]["fitted"] = fit_crystallinity(per_group)
        else:
            n = args.levels_size
            if n:
                step = max(1, len(clusters) // n)
                results[role]["levels"] = level_rates(model, clusters[::step][:n], labels[::step][:n], seed)
                results[role]["basis_check"] = basis_rates(model, structures[::step][:n], labels[::step][:n], seed)
        print(f"{role} (seed {seed}): {time.perf_counter() - t:.0f} s", flush=True)
        for name, s in results[role]["groups"].items():
            print(f"  {name:16s} confident {s['confident_fraction']:.4f}  bragg q0.5/q99.5 "
                  f"{s['bragg_fraction']['q0.5']:.3f}/{s['bragg_fraction']['q99.5']:.3f}  "
                  f"p_max q0.5 {s['p_max']['q0.5']:.3f}  score q0.5/q1 {s['score']['q0.5']:.3f}/{s['score']['q1']:.3f}",
                  flush=True)
        if role == "calibration":
            print("  fitted:", results[role]["fitted"], flush=True)

    print("unknown crystals (full pipeline):", flush=True)
    results["unknown_crystals"] = unknown_crystals(model, Path(args.data))
    test = results["test"]["groups"]
    acceptance = {
        "amorphous_flagged_min": min(test[g]["flagged_fraction"] for g in ("amorphous L=0.3", "amorphous L=0.4")),
        "crystals_confident_min": min(test[g]["confident_fraction"] for g in IN_DISTRIBUTION),
    }
    acceptance["passed"] = acceptance["amorphous_flagged_min"] >= 0.95 and acceptance["crystals_confident_min"] >= 0.99
    out = {
        "benchmark": "confidence",
        "command": command_line("benchmarks/confidence.py", argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "crystalface_version": crystalface.__version__,
        "model": {"file": str(weights) if weights else "shipped default",
                  "sha256": model.card.get("weights_sha256"),
                  "validation_accuracy": model.card.get("validation_accuracy"),
                  "descriptor": model.descriptor.to_dict()},
        "constants": {"TOP_PIXELS": confidence.TOP_PIXELS, "BRAGG_CENTRE": confidence.BRAGG_CENTRE,
                      "BRAGG_SLOPE": confidence.BRAGG_SLOPE, "THRESHOLD": confidence.THRESHOLD,
                      "VACUUM_DISTANCE": confidence.VACUUM_DISTANCE, "MAX_VACUUM": confidence.MAX_VACUUM,
                      "NOVELTY_LIMIT": confidence.NOVELTY_LIMIT},
        "acceptance": acceptance,
        **results,
        "seconds": round(time.perf_counter() - start, 1),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    print("acceptance:", acceptance)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
