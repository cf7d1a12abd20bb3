"""The pictures of docs/insight.md: attentive response maps of fcc, bcc and diamond, and the learned templates.

    python benchmarks/experiments/insight_maps.py [--model M.safetensors] [--output docs]

Writes ``maps_fcc.png``, ``maps_bcc.png``, ``maps_diam.png`` (``crystalface explain`` on Cu, Fe and
Si from ``crystalface.examples.REAL_CRYSTALS``), ``templates.png`` (the last convolutional layer's
maps summed and averaged over ``--per-class`` pristine test structures per class, drawn by
``crystalface.dataset.generate_structures`` with ``--seed``, not the training set's) and
into ``--output``, and ``--json`` (default ``benchmarks/experiments/insight_maps.json``: predictions,
top filters and the run's parameters).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from crystalface.classes import CLASSES
from crystalface.dataset import generate_structures
from crystalface.examples import REAL_CRYSTALS
from crystalface.explain import class_templates, response_maps, save_response_maps, save_templates
from crystalface.model import _default_path, load_model
from crystalface.pipeline import compute_fingerprints

#: Crystal name -> the file-name tag of its picture.
SHOWN = {"Cu": "fcc", "Fe": "bcc", "Si": "diam"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model .safetensors file (default: the shipped model)")
    parser.add_argument("--output", default="docs", help="folder for the pictures (default docs)")
    parser.add_argument("--per-class", type=int, default=20, help="pristine structures per class for the templates")
    parser.add_argument("--seed", type=int, default=2000, help="seed of the template structures (training set: 0)")
    parser.add_argument("--json", default="benchmarks/experiments/insight_maps.json", help="summary file")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    model = load_model(args.model)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    crystals = {c.name: c for c in REAL_CRYSTALS}
    shipped = args.model is None or Path(args.model).resolve() == _default_path().resolve()
    record = {"command": shlex.join(["python", *sys.argv]),
              "model": "crystalface/models/default.safetensors (shipped)" if shipped else str(args.model),
              "model_sha256": model.card.get("weights_sha256"), "maps": {}, "templates": {}}
    for name, tag in SHOWN.items():
        maps = response_maps(model, crystals[name].primitive())
        path = save_response_maps(maps, out / f"maps_{tag}.png", title=f"{name} ({crystals[name].label})")
        record["maps"][name] = {"file": str(path), **maps.to_dict()}
        print(f"{name}: {maps.label} ({maps.probabilities.max():.3f}) -> {path}")

    structures, labels = [], []
    for atoms, info in generate_structures(len(CLASSES) * args.per_class, seed=args.seed):
        structures.append(atoms)
        labels.append(info["label"])
    images, errors = compute_fingerprints(structures, model.descriptor, workers=args.workers, progress=True)
    by_class = defaultdict(list)
    for image, label, error in zip(images, labels, errors):
        if error is None:
            by_class[label].append(image)
    templates = class_templates(model, {c: np.stack(by_class[c]) for c in CLASSES if by_class[c]})
    path = save_templates(templates, out / "templates.png")
    record["templates"] = {"file": str(path), "seed": args.seed, "structures": {c: len(v) for c, v in by_class.items()}}
    record["seconds"] = round(time.perf_counter() - start, 1)
    Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    print(f"templates of {len(templates)} classes -> {path}; {record['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
