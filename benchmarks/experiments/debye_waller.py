"""Why the Bragg peaks of some crystals fade first on the ordered -> amorphous path (docs/insight.md, section 4).

    python benchmarks/experiments/debye_waller.py [--realisations 20] [--output benchmarks/experiments/debye_waller]

Gaussian displacements of sigma per axis damp a reflection at wave vector q by the Debye-Waller
factor exp(-q^2 sigma^2), on average; in the scaled cluster (lengths in nearest-neighbour
distances, SPEC step 5) sigma is the Lindemann parameter L. A pattern whose brightest pixels lie at
large q d_nn therefore loses its Bragg peaks at a smaller L. For each crystal of
``crystalface.examples.REAL_CRYSTALS`` this script measures, on its pristine fingerprint, the
intensity-weighted mean q^2 d_nn^2 over the brightest 1 % of the pixels of each channel (the
pixels ``crystalface.confidence.bragg_fraction`` sums), the damping exp(-<q^2> L^2) that predicts
at L = 0.1, and the Bragg fraction measured at L = 0.1 relative to the pristine one, on the
displaced clusters of ``crystalface experiment amorphous`` (the same random stream and seed 0, so
the same structures as benchmarks/experiments/amorphous.json). Writes <output>.json and <output>.md.
"""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from crystalface import fingerprint, load_model
from crystalface.confidence import TOP_PIXELS, bragg_fraction
from crystalface.evaluation.provenance import command_line, machine_info, report_paths
from crystalface.evaluation.transitions import _TAG_AMORPHOUS, _crystal, _displaced, run_amorphous
from crystalface.examples import REAL_CRYSTALS
from crystalface.scaling import nearest_neighbour_distance

#: Lindemann parameter at which the prediction is compared with the measurement (the start of the melting range).
LINDEMANN = 0.1


def weighted_q2(image: np.ndarray, q2: np.ndarray, mask: np.ndarray) -> float:
    """Mean over the three channels of the intensity-weighted q^2 of each channel's brightest TOP_PIXELS pixels."""
    k = max(1, int(round(TOP_PIXELS * mask.sum())))
    values = []
    for channel in image:
        x = channel[mask]
        top = np.argsort(x)[-k:]
        values.append(float((x[top] * q2[mask][top]).sum() / x[top].sum()))
    return float(np.mean(values))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--realisations", type=int, default=20, help="displaced clusters per crystal (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the displacements (default 0, the experiment's)")
    parser.add_argument("--output", default="benchmarks/experiments/debye_waller")
    args = parser.parse_args(argv)

    model = load_model()
    descriptor = model.descriptor
    params = descriptor.df2d
    q2 = (params.q_exact() ** 2).sum(-1)  # |q|^2 per pixel; 1/d_nn^2 for a scaled cluster
    mask = params.mask().astype(bool)
    # the step of the experiment's default grid of Lindemann parameters at which L = LINDEMANN: its random stream
    defaults = inspect.signature(run_amorphous).parameters
    grid = np.linspace(0.0, defaults["max_lindemann"].default, defaults["steps"].default)
    step = int(np.argmin(np.abs(grid - LINDEMANN)))
    rows, predicted, measured = {}, [], []
    for ci, crystal in enumerate(REAL_CRYSTALS):
        cluster = descriptor.cluster(_crystal(crystal.name).primitive())
        d_nn = nearest_neighbour_distance(cluster, descriptor.scaling, descriptor.shell_bandwidth)
        pristine = fingerprint([descriptor.scale(cluster)], params)
        displaced = fingerprint([descriptor.scale(_displaced(cluster, (LINDEMANN * d_nn, args.seed, (_TAG_AMORPHOUS, ci, step, r)), None))
                                 for r in range(args.realisations)], params)
        mean_q2 = weighted_q2(pristine[0], q2, mask)
        before, after = float(bragg_fraction(pristine)[0]), float(bragg_fraction(displaced).mean())
        predicted.append(float(np.exp(-mean_q2 * LINDEMANN**2)))
        measured.append(after / before)
        rows[crystal.name] = {
            "class": crystal.label,
            "bragg_q_dnn": round(float(np.sqrt(mean_q2)), 3),
            "predicted_damping": round(predicted[-1], 3),
            "bragg_fraction_pristine": round(before, 4),
            "bragg_fraction_at_L": round(after, 4),
            "measured_ratio": round(measured[-1], 3),
        }
    rank = spearmanr(predicted, measured).statistic
    command = command_line("benchmarks/experiments/debye_waller.py", argv)
    result = {"command": command, "machine": machine_info(), "lindemann": LINDEMANN, "seed": args.seed,
              "realisations": args.realisations, "top_pixels": TOP_PIXELS, "crystals": rows,
              "spearman_predicted_vs_measured": round(float(rank), 3)}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = report_paths(out)
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# Debye-Waller damping of the brightest pixels", "", f"`{command}`", "",
             f"Pristine fingerprint of each crystal: intensity-weighted |q| d_nn of its brightest {TOP_PIXELS:.0%} "
             f"pixels, the damping exp(-<q^2> L^2) that predicts at L = {LINDEMANN}, and the Bragg fraction measured "
             f"there ({args.realisations} displaced clusters of the amorphous experiment, seed {args.seed}) "
             "relative to the pristine one.", "",
             "| crystal | class | q d_nn of the brightest pixels | predicted damping | Bragg fraction pristine | at L | measured ratio |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['class']} | {r['bragg_q_dnn']:.2f} | {r['predicted_damping']:.2f} | "
                     f"{r['bragg_fraction_pristine']:.3f} | {r['bragg_fraction_at_L']:.3f} | {r['measured_ratio']:.2f} |")
    lines += ["", f"Spearman rank correlation of predicted damping and measured ratio: {rank:.2f}.", ""]
    md_path.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
