"""Maps of real samples without lattice vectors against OVITO's PTM and a-CNA (issue 7).

    python benchmarks/polycrystal.py --output benchmarks/polycrystal

Needs the optional extra ``pip install -e ".[ptm]"`` (OVITO) and the shared data folder
(``--data``, default ../shared/data next to the repository). Three samples:

* ``polycrystal/four_grains_elemental_solid.xyz``: 9 087 atoms, four grains (fcc, hcp, bcc, cubic
  diamond). Grain-interior atoms are those PTM (cubic diamond enabled) labels fcc, hcp, bcc or cubic
  diamond; the acceptance is >= 95 % agreement (PTM fcc -> fcc, bcc -> bcc, hcp -> hex/rh, cubic
  diamond -> diam). Also: how the per-atom vote (radius) changes it, and the map's wall time.
* ``..._distorted.xyz``: ~20 % of the atoms removed, the rest displaced. Atoms are matched to the
  pristine sample by nearest position; on those grain-interior in the pristine sample, the fraction
  that gets the right class from crystalface, from PTM and from a-CNA run on the distorted sample
  (a-CNA knows no diamond; OVITO's IdentifyDiamondModifier is reported beside it).
* ``tomography/FePt_nanoparticle_AET_2017.xyz``: 23 196 atoms from atomic electron tomography. Map
  and confidence histogram, PTM's labels, and the anisotropy of the local lattices.

Writes <output>.json, <output>.md and PNGs beside them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

#: OVITO structure names -> crystalface classes (grain-interior atoms).
TO_CLASS = {"FCC": "fcc", "BCC": "bcc", "HCP": "hex/rh", "Cubic diamond": "diam"}
CLASSES = ("fcc", "hex/rh", "bcc", "diam")


def ovito_labels(atoms, method: str) -> np.ndarray:
    """Per-atom crystalface class (or "other") from OVITO: "ptm" (cubic diamond enabled), "a-cna",
    or "diamond" (IdentifyDiamondModifier: cubic diamond and its first/second neighbours)."""
    from ovito.io.ase import ase_to_ovito
    from ovito.modifiers import (CommonNeighborAnalysisModifier, IdentifyDiamondModifier,
                                 PolyhedralTemplateMatchingModifier)

    data = ase_to_ovito(atoms)
    if method == "ptm":
        modifier = PolyhedralTemplateMatchingModifier()
        modifier.structures[PolyhedralTemplateMatchingModifier.Type.CUBIC_DIAMOND].enabled = True
    elif method == "a-cna":
        modifier = CommonNeighborAnalysisModifier(mode=CommonNeighborAnalysisModifier.Mode.AdaptiveCutoff)
    elif method == "diamond":
        modifier = IdentifyDiamondModifier()
    else:
        raise ValueError(method)
    data.apply(modifier)
    prop = data.particles["Structure Type"]
    names = {int(t.id): t.name for t in prop.types}
    table = {k: ("diam" if method == "diamond" and v.startswith("Cubic diamond") else TO_CLASS.get(v, "other"))
             for k, v in names.items()}
    return np.array([table[int(s)] for s in np.asarray(prop)])


def agreement(ours: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> dict:
    """Overall and per-class fraction (%) of ``mask`` atoms where ``ours`` equals ``reference``."""
    same = ours[mask] == reference[mask]
    out = {"n": int(mask.sum()), "percent": round(100.0 * float(same.mean()), 2)}
    out["per_class"] = {c: {"n": int((reference[mask] == c).sum()),
                            "percent": round(100.0 * float(same[reference[mask] == c].mean()), 2)}
                        for c in CLASSES if (reference[mask] == c).any()}
    labels = sorted(set(ours[mask].tolist()))
    out["confusion"] = {c: {lab: int(((reference[mask] == c) & (ours[mask] == lab)).sum()) for lab in labels}
                        for c in CLASSES if (reference[mask] == c).any()}
    return out


def lattice_anisotropy(atoms, result, box: float) -> dict:
    """Mean second moment of the 12 shortest lattice vectors of the full windows' local lattices,
    normalised to trace 3: the identity for an undistorted cubic lattice, whatever its orientation."""
    from scipy.spatial import cKDTree

    from crystalface.local import local_lattice

    tree = cKDTree(atoms.positions)
    full = np.flatnonzero(result.n_atoms >= 0.9 * result.n_atoms.max())
    ints = np.array(list(itertools.product(range(-2, 3), repeat=3)))
    moments = []
    for i in full:
        lattice = local_lattice(atoms.positions[tree.query_ball_point(result.centres[i], box / 2, p=np.inf)], result.centres[i])
        if lattice is None:
            continue
        v = ints @ lattice
        n = np.linalg.norm(v, axis=1)
        v = v[n > 1e-6][np.argsort(n[n > 1e-6])[:12]]
        t = v.T @ v
        moments.append(3 * t / np.trace(t))
    mean = np.mean(moments, axis=0)
    return {"n_windows": len(moments), "moment": np.round(mean, 4).tolist(),
            "eigenvalues": np.round(np.linalg.eigvalsh(mean), 4).tolist()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--box", type=float, default=16.0)
    parser.add_argument("--stride", type=float, default=2.0)
    parser.add_argument("--nanoparticle-stride", type=float, default=4.0,
                        help="stride for the 23 196-atom nanoparticle (default 4 Å: ~5 600 windows)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default=None, help="model .safetensors file (default: the shipped model)")
    parser.add_argument("--output", default="benchmarks/polycrystal")
    args = parser.parse_args(argv)

    from ase.io import read
    from scipy.spatial import cKDTree

    from crystalface import load_model
    from crystalface.evaluation.provenance import command_line, machine_info, report_paths
    from crystalface.mapping import _vote, map_structure, plot_slices

    data = Path(args.data)
    out_path = Path(args.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model)
    report = {
        "command": command_line("benchmarks/polycrystal.py", argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "parameters": {"box": args.box, "stride": args.stride, "nanoparticle_stride": args.nanoparticle_stride,
                       "workers": args.workers},
    }
    import ovito

    report["machine"]["ovito"] = ovito.version_string

    # --- pristine polycrystal ------------------------------------------------------------------
    pristine = read(data / "polycrystal" / "four_grains_elemental_solid.xyz")
    t0 = time.perf_counter()
    ptm = ovito_labels(pristine, "ptm")
    ptm_seconds = time.perf_counter() - t0
    interior = ptm != "other"
    t0 = time.perf_counter()
    result = map_structure(pristine, model, box=args.box, stride=args.stride, workers=args.workers, progress=False)
    wall = time.perf_counter() - t0
    votes = {}
    for radius in (0.0, 2.0, 4.0, 6.0, args.box / 2):
        labels, _, _ = _vote(pristine.positions, result.centres, result.labels, result.probabilities, result.scores,
                          args.box, radius, result.classes)
        votes[f"{radius:g}"] = round(100.0 * float(np.mean(labels[interior] == ptm[interior])), 2)
    report["pristine"] = {
        "n_atoms": len(pristine), "ptm_counts": {str(k): int(v) for k, v in zip(*np.unique(ptm, return_counts=True))},
        "map_seconds": round(wall, 1), "map_steps_seconds": result.seconds, "ptm_seconds": round(ptm_seconds, 2),
        "n_windows": len(result.centres), "windows_without_lattice": int(sum(x is None for x in result.labels)),
        "atoms_per_class": result.counts(),
        "agreement_with_ptm": agreement(result.atom_labels, ptm, interior),
        "agreement_by_vote_radius": votes,
    }
    plot_slices(pristine, result, out_path.with_name(out_path.name + "_pristine.png"),
                title=f"four-grain polycrystal: crystalface map (box {args.box:g} Å, stride {args.stride:g} Å)")
    print(f"pristine: {report['pristine']['agreement_with_ptm']['percent']} % agree with PTM on "
          f"{interior.sum()} grain-interior atoms; map {wall:.1f} s", flush=True)

    # --- distorted polycrystal -----------------------------------------------------------------
    distorted = read(data / "polycrystal" / "four_grains_elemental_solid_distorted.xyz")
    match_distance, match = cKDTree(pristine.positions).query(distorted.positions)
    truth = ptm[match]
    inner = truth != "other"
    t0 = time.perf_counter()
    dmap = map_structure(distorted, model, box=args.box, stride=args.stride, workers=args.workers, progress=False)
    dwall = time.perf_counter() - t0
    d_ptm, d_cna, d_diamond = (ovito_labels(distorted, m) for m in ("ptm", "a-cna", "diamond"))
    d_cna_diamond = np.where(d_cna == "other", d_diamond, d_cna)
    report["distorted"] = {
        "n_atoms": len(distorted), "match_distance_max": round(float(match_distance.max()), 4),
        "n_grain_interior_in_pristine": int(inner.sum()), "map_seconds": round(dwall, 1),
        "windows_without_lattice": int(sum(x is None for x in dmap.labels)), "atoms_per_class": dmap.counts(),
        "crystalface": agreement(dmap.atom_labels, truth, inner),
        "ptm": agreement(d_ptm, truth, inner),
        "a_cna": agreement(d_cna, truth, inner),
        "a_cna_plus_identify_diamond": agreement(d_cna_diamond, truth, inner),
    }
    plot_slices(distorted, dmap, out_path.with_name(out_path.name + "_distorted.png"),
                title="distorted polycrystal (~20 % atoms removed, rest displaced): crystalface map")
    print(f"distorted: crystalface {report['distorted']['crystalface']['percent']} %, PTM "
          f"{report['distorted']['ptm']['percent']} %, a-CNA {report['distorted']['a_cna']['percent']} %", flush=True)

    # --- FePt nanoparticle (tomography) --------------------------------------------------------
    particle = read(data / "tomography" / "FePt_nanoparticle_AET_2017.xyz")
    t0 = time.perf_counter()
    nmap = map_structure(particle, model, box=args.box, stride=args.nanoparticle_stride, workers=args.workers, progress=False)
    nwall = time.perf_counter() - t0
    n_ptm = ovito_labels(particle, "ptm")
    tree = cKDTree(particle.positions)
    nn = float(np.median(tree.query(particle.positions, k=2)[0][:, 1]))
    coordination = np.array([len(x) - 1 for x in tree.query_ball_point(particle.positions, 1.2 * nn)])
    surface = coordination < 9  # a (111) facet atom of an fcc particle has 9 neighbours, a bulk one 12
    core = (n_ptm == "fcc") & ~surface
    conf = nmap.atom_confidence
    report["nanoparticle"] = {
        "n_atoms": len(particle), "stride": args.nanoparticle_stride, "map_seconds": round(nwall, 1),
        "n_windows": len(nmap.centres), "windows_without_lattice": int(sum(x is None for x in nmap.labels)),
        "window_labels": {str(k): int(v) for k, v in zip(*np.unique([str(x) for x in nmap.labels], return_counts=True))},
        "atoms_per_class": nmap.counts(),
        "ptm_counts": {str(k): int(v) for k, v in zip(*np.unique(n_ptm, return_counts=True))},
        "n_surface_atoms": int(surface.sum()), "n_core_fcc_atoms_by_ptm": int(core.sum()),
        "core_fcc_by_ptm": {"percent_fcc": round(100 * float(np.mean(nmap.atom_labels[core] == "fcc")), 2),
                            "labels": {str(k): int(v) for k, v in zip(*np.unique(nmap.atom_labels[core], return_counts=True))},
                            "median_confidence": round(float(np.median(conf[core])), 3)},
        "surface": {"labels": {str(k): int(v) for k, v in zip(*np.unique(nmap.atom_labels[surface], return_counts=True))},
                    "median_confidence": round(float(np.median(conf[surface])), 3)},
        "ptm_other_interior": {"n": int(((n_ptm == "other") & ~surface).sum()),
                               "median_confidence": round(float(np.median(conf[(n_ptm == "other") & ~surface])), 3)},
        "lattice_anisotropy": lattice_anisotropy(particle, nmap, args.box),
    }
    # is the hex/rh a distortion of the whole reconstruction? Undo the mean anisotropy of the local
    # lattices (positions @ M^(-1/2), M their mean second moment) and map again
    moment = np.array(report["nanoparticle"]["lattice_anisotropy"]["moment"])
    w, v = np.linalg.eigh(moment)
    isotropic = particle.copy()
    isotropic.positions = particle.positions @ (v @ np.diag(w**-0.5) @ v.T)
    imap = map_structure(isotropic, model, box=args.box, stride=args.nanoparticle_stride, workers=args.workers, progress=False)
    report["nanoparticle"]["isotropic"] = {
        "atoms_per_class": imap.counts(),
        "core_fcc_by_ptm": {"percent_fcc": round(100 * float(np.mean(imap.atom_labels[core] == "fcc")), 2),
                            "median_confidence": round(float(np.median(imap.atom_confidence[core])), 3)},
        "lattice_anisotropy": lattice_anisotropy(isotropic, imap, args.box),
    }
    plot_slices(particle, nmap, out_path.with_name(out_path.name + "_nanoparticle.png"), thickness=3.0,
                title=f"FePt nanoparticle (AET): crystalface map (box {args.box:g} Å, stride {args.nanoparticle_stride:g} Å)")
    _histogram(conf, core, surface, (n_ptm == "other") & ~surface, out_path.with_name(out_path.name + "_nanoparticle_confidence.png"))
    print(f"nanoparticle: {nmap.counts()} in {nwall:.0f} s", flush=True)

    json_path, md_path = report_paths(out_path)
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    md_path.write_text(_markdown(report))
    print(f"wrote {json_path}, {md_path} and the PNGs")
    return 0


def _histogram(confidence, core, surface, other, path):
    from crystalface.plotting import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.linspace(0, 1, 26)
    for mask, label in ((core, "PTM fcc, not surface"), (other, "PTM other, not surface"), (surface, "surface (< 9 neighbours)")):
        ax.hist(confidence[mask], bins=bins, histtype="step", linewidth=1.5, label=f"{label} ({int(mask.sum())})")
    ax.set_xlabel("crystalface per-atom confidence")
    ax.set_ylabel("atoms")
    ax.set_title("FePt nanoparticle: per-atom confidence", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(r: dict) -> str:
    p, d, n = r["pristine"], r["distorted"], r["nanoparticle"]
    a = p["agreement_with_ptm"]
    lines = [
        "# Maps of samples without lattice vectors, against OVITO's PTM and a-CNA",
        "",
        f"`{r['command']}` — {r['date']}, {r['machine']['platform']}, {r['machine']['cpus']} CPUs, "
        f"OVITO {r['machine'].get('ovito')}. Box {r['parameters']['box']:g} Å, stride {r['parameters']['stride']:g} Å, "
        f"{r['parameters']['workers']} worker processes.",
        "",
        "## Four-grain polycrystal (9 087 Fe atoms: fcc, hcp, bcc, cubic diamond grains)",
        "",
        f"Grain-interior atoms = those PTM (cubic diamond enabled) labels fcc / hcp / bcc / cubic diamond: {a['n']} of "
        f"{p['n_atoms']}. **crystalface agrees with PTM on {a['percent']} % of them** (acceptance >= 95 %).",
        "",
        "| PTM class | atoms | agreement (%) |", "|---|---:|---:|",
        *[f"| {c} | {v['n']} | {v['percent']} |" for c, v in a["per_class"].items()],
        "",
        f"Map: {p['n_windows']} windows ({p['windows_without_lattice']} without a lattice), **{p['map_seconds']} s wall** "
        f"(steps: {p['map_steps_seconds']}); PTM {p['ptm_seconds']} s.",
        "",
        "Per-atom vote — windows whose centre lies within R of the atom vote, weighted by their score "
        "(R = 0: the nearest classified window). Agreement with PTM (%):",
        "",
        "| R (Å) | " + " | ".join(p["agreement_by_vote_radius"]) + " |",
        "|---|" + "---:|" * len(p["agreement_by_vote_radius"]),
        "| agreement | " + " | ".join(str(v) for v in p["agreement_by_vote_radius"].values()) + " |",
        "",
        "![pristine polycrystal map](polycrystal_pristine.png)",
        "",
        "## Distorted polycrystal (~20 % of the atoms removed, the rest displaced)",
        "",
        f"{d['n_atoms']} atoms, matched to the pristine sample by nearest position (largest distance "
        f"{d['match_distance_max']} Å). On the {d['n_grain_interior_in_pristine']} atoms that are grain-interior in the "
        "pristine sample, the fraction that gets the right class (acceptance for crystalface >= 90 %):",
        "",
        "| method | right class (%) | fcc | hex/rh | bcc | diam |", "|---|---:|---:|---:|---:|---:|",
    ]
    for key, name in (("crystalface", "crystalface map"), ("ptm", "PTM"), ("a_cna", "a-CNA"),
                      ("a_cna_plus_identify_diamond", "a-CNA + OVITO identify diamond")):
        per = d[key]["per_class"]
        lines.append(f"| {name} | **{d[key]['percent']}** | " + " | ".join(str(per.get(c, {}).get("percent", "-")) for c in CLASSES) + " |")
    lines += [
        "",
        f"crystalface: {d['windows_without_lattice']} windows without a lattice; map {d['map_seconds']} s. PTM and a-CNA "
        "need every neighbour of an atom: with a fifth of the atoms missing almost no atom has a complete shell.",
        "",
        "![distorted polycrystal map](polycrystal_distorted.png)",
        "",
        "## FePt nanoparticle (atomic electron tomography, 23 196 atoms)",
        "",
        f"Stride {n['stride']:g} Å: {n['n_windows']} windows ({n['windows_without_lattice']} without a lattice) in "
        f"{n['map_seconds']} s. Window labels: {n['window_labels']}. Atoms per class: {n['atoms_per_class']}. "
        f"PTM: {n['ptm_counts']}.",
        "",
        f"* Core (PTM fcc, at least 9 neighbours within 1.2 nearest-neighbour distances; {n['n_core_fcc_atoms_by_ptm']} atoms): "
        f"{n['core_fcc_by_ptm']['percent_fcc']} % fcc, labels {n['core_fcc_by_ptm']['labels']}, median confidence "
        f"{n['core_fcc_by_ptm']['median_confidence']}.",
        f"* Surface ({n['n_surface_atoms']} atoms with fewer than 9 neighbours): labels {n['surface']['labels']}, median "
        f"confidence {n['surface']['median_confidence']}.",
        f"* Interior atoms PTM calls other ({n['ptm_other_interior']['n']}): median confidence "
        f"{n['ptm_other_interior']['median_confidence']}.",
        f"* Local lattices of the {n['lattice_anisotropy']['n_windows']} fullest windows: mean normalised second moment of "
        f"the 12 shortest lattice vectors has eigenvalues {n['lattice_anisotropy']['eigenvalues']} (1, 1, 1 for an "
        "undistorted cubic lattice in any orientation).",
        "",
        f"* With that mean anisotropy undone (positions x M^(-1/2), a {100 * (max(n['lattice_anisotropy']['eigenvalues']) ** 0.5 / min(n['lattice_anisotropy']['eigenvalues']) ** 0.5 - 1):.1f} % "
        f"stretch between principal axes): atoms per class {n['isotropic']['atoms_per_class']}; core {n['isotropic']['core_fcc_by_ptm']['percent_fcc']} % fcc, "
        f"median confidence {n['isotropic']['core_fcc_by_ptm']['median_confidence']}; eigenvalues after: {n['isotropic']['lattice_anisotropy']['eigenvalues']}.",
        "",
        "![nanoparticle map](polycrystal_nanoparticle.png)",
        "",
        "![nanoparticle confidence](polycrystal_nanoparticle_confidence.png)",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
