"""Command-line interface: a thin layer over the Python API, one small function per command.

Exit status: 0 everything worked, 1 some structures failed (the others were still done), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

__all__ = ["main"]


def _print_table_row(cells, widths, file=None):
    print("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip(), file=file or sys.stdout, flush=True)


#: Widest source column of the classify table; longer paths keep their end (the file name).
_MOST_SOURCE_WIDTH = 60


def _source_column(files) -> tuple[int, Callable[[str], str]]:
    """Width of the table's source column for these input paths, and how a source is fitted to it.

    The sources are the paths as given, known before the first row is printed: the column is as
    wide as the longest (6 to :data:`_MOST_SOURCE_WIDTH`), and a longer one shows "…" and its end.
    """
    width = min(max([len("source"), *(len(str(f)) for f in files)]), _MOST_SOURCE_WIDTH)

    def fit(source) -> str:
        text = str(source)
        return text if len(text) <= width else "…" + text[len(text) - width + 1:]

    return width, fit


def cmd_classify(args) -> int:
    from .batch import classify_files

    if args.resume and not (args.output or args.output_db):
        print("crystalface: --resume needs --output (or --output-db): the records to continue", file=sys.stderr)
        return 2
    options = dict(model=args.model, workers=args.workers, scheduler=args.scheduler, index=args.index, format=args.format)
    if args.output or args.output_db:
        try:
            summary = classify_files(args.files, args.output, write_db=args.output_db, resume=args.resume,
                                     overwrite=args.overwrite, progress=not args.quiet, **options)
        except (OSError, ValueError, ImportError) as exc:  # OSError: the output exists or cannot be written, a scheduler out of reach
            # "cannot write FILE: reason" is the strerror of the OSError classify_files raises, without "[Errno N]"
            print(f"crystalface: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}", file=sys.stderr)
            return 2
        where = " and ".join(([args.output] if args.output else []) + (["the input databases"] if args.output_db else []))
        skipped = f", {summary.skipped} already done" if summary.skipped else ""
        print(f"crystalface: {_counts(summary)}{skipped}; written to {where}", file=sys.stderr)
        for p in summary.failures:
            print(f"  {_where(p)}: {p.error}", file=sys.stderr)
        if summary.failed > len(summary.failures):
            print(f"  ... and {summary.failed - len(summary.failures)} more (records with an error)", file=sys.stderr)
        return 1 if summary.failed else 0

    source_width, fit = _source_column(args.files)
    widths = (source_width, 6, 8, 12, 18, 20)
    if not args.json:
        _print_table_row(("source", "frame", "class", "probability", "runner-up", "score"), widths)
    failures = []

    def emit(predictions):
        for p in predictions:
            if p.error is not None:
                failures.append(p)
            if args.json:
                print(json.dumps(p.to_dict()), flush=True)
            elif p.error is not None:
                frame = "-" if p.index == _WHOLE_FILE else p.index
                _print_table_row((fit(p.source), frame, "-", "error: " + p.error), widths[:3] + (80,))
            else:
                ranked = sorted(p.probabilities.items(), key=lambda kv: -kv[1])
                runner = f"{ranked[1][0]} ({ranked[1][1]:.3f})" if len(ranked) > 1 else ""
                score = f"{p.score:.3f}" + ("" if p.confident else " not confident") + (f": {p.reason}" if p.reason else "")
                _print_table_row((fit(p.source), p.index, p.label, f"{p.probability:.3f}", runner, score), widths)

    try:
        summary = classify_files(args.files, callback=emit, **options)
    except (OSError, ValueError, ImportError) as exc:  # OSError: e.g. a Dask scheduler out of reach
        print(f"crystalface: {exc}", file=sys.stderr)
        return 2
    if failures:
        total = summary.classified + summary.failed
        print(f"crystalface: {len(failures)} of {total} structures could not be classified:", file=sys.stderr)
        for p in failures:
            print(f"  {_where(p)}: {p.error}", file=sys.stderr)
    if summary.classified + summary.failed > 1 and not args.quiet:  # a trajectory, a folder: what came out of it
        print(f"crystalface: {_counts(summary)}", file=sys.stderr)
    return 1 if failures else 0


def _counts(summary) -> str:
    """What a :class:`crystalface.batch.BatchSummary` counted, in one line:
    ``"12 classified: hex/rh 8 (0 confident), fcc 4 (3 confident); 0 failed"``."""
    labels = f": {summary.label_counts()};" if summary.labels else ","
    return f"{summary.classified} classified{labels} {summary.failed} failed"


#: Index of a record whose whole file failed before any frame was read (:class:`crystalface.io.Entry`).
_WHOLE_FILE = -1


def _where(prediction) -> str:
    """'source [frame]' of a record, or just 'source' when the whole file failed (index -1, not the last frame)."""
    if prediction.index == _WHOLE_FILE:
        return str(prediction.source)
    return f"{prediction.source} [{prediction.index}]"


def _on_one_frame(args, compute):
    """``(entry, compute(entry.atoms))`` for the frame ``args.index`` of ``args.file``.

    None after printing, in one line, why the frame cannot be read or ``compute`` refused it.
    """
    from .cell import StructureError
    from .io import read_structures

    entry = next(iter(read_structures([args.file], index=str(args.index), format=args.format)), None)
    if entry is None or entry.error is not None:
        print(f"crystalface: {args.file}: {entry.error if entry else 'no structure'}", file=sys.stderr)
        return None
    try:
        return entry, compute(entry.atoms)
    except (StructureError, ValueError) as exc:
        print(f"crystalface: {args.file} [{args.index}]: {str(exc).splitlines()[0]}", file=sys.stderr)
        return None


def cmd_fingerprint(args) -> int:
    import numpy as np

    from .model import load_model
    from .pipeline import Descriptor
    from .plotting import save_fingerprint

    descriptor = load_model(args.model).descriptor if args.model else Descriptor()
    done = _on_one_frame(args, descriptor)
    if done is None:
        return 1
    image = done[1]
    save_fingerprint(image, args.output, title=f"{Path(args.file).name} [{args.index}]")
    print(f"wrote {args.output}")
    if args.npy:
        np.save(args.npy, image)
        print(f"wrote {args.npy}")
    return 0


def cmd_explain(args) -> int:
    import numpy as np

    from .classify import classify
    from .explain import response_maps, save_response_maps
    from .model import load_model

    model = load_model(args.model)
    # the maps, and the prediction with its confidence: maps of a label not to be trusted should say so
    done = _on_one_frame(args, lambda atoms: (response_maps(model, atoms, target=args.target, top_k=args.top_k),
                                              classify(atoms, model=model)))
    if done is None:
        return 1
    maps, prediction = done[1]
    save_response_maps(maps, args.output, title=f"{Path(args.file).name} [{args.index}]")
    doubt = "" if prediction.confident else f", not confident: {prediction.reason}"
    target = "" if maps.target == maps.label else f"; maps for {maps.target}"
    print(f"{maps.label} ({maps.probabilities.max():.3f}{doubt}){target}; wrote {args.output}")
    if args.json:
        verdict = {"confident": prediction.confident, "score": round(float(prediction.score), 6), "reason": prediction.reason}
        Path(args.json).write_text(json.dumps({"source": args.file, "index": args.index, **maps.to_dict(), **verdict},
                                              indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.npz:
        np.savez_compressed(args.npz, fingerprint=maps.fingerprint, maps=maps.maps,
                            **{f"{layer.name}_filter_maps": layer.filter_maps for layer in maps.layers})
        print(f"wrote {args.npz}")
    return 0


def cmd_dataset(args) -> int:
    from .dataset import make_dataset

    try:
        path = make_dataset(args.output, size=args.size, seed=args.seed, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as exc:
        print(f"crystalface: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.size} structures to {path} (list them with: ase db {path})")
    return 0


def cmd_train(args) -> int:
    from .train import train_from_dataset

    if not Path(args.dataset).is_file():
        print(f"crystalface: data set {args.dataset} not found (make it with: crystalface dataset)", file=sys.stderr)
        return 2
    try:
        model = train_from_dataset(
            args.dataset, args.output, seed=args.seed, workers=args.workers,
            max_epochs=args.max_epochs, patience=args.patience, scale_jitter=args.scale_jitter,
        )
    except ValueError as exc:  # not a data set of crystalface dataset, or training options it refuses
        print(f"crystalface: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output).with_suffix(".safetensors")
    print(f"validation accuracy {model.card['validation_accuracy']:.4f} "
          f"({model.card['training']['n_validation']} structures); wrote {out} and {out.with_suffix('.json')}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(seed=args.seed)


def cmd_map(args) -> int:
    from .mapping import map_structure, write_map
    from .model import load_model

    model = load_model(args.model)
    done = _on_one_frame(args, lambda atoms: map_structure(
        atoms, model=model, box=args.box, stride=args.stride, min_atoms=args.min_atoms, vote_radius=args.vote_radius,
        species=args.species, workers=args.workers, progress=not args.quiet))
    if done is None:
        return 1
    entry, result = done
    output = args.output or Path(args.file).stem + "_map"
    paths = write_map(entry.atoms, result, output, source=args.file)
    counts = ", ".join(f"{k} {v}" for k, v in result.counts().items())
    print(f"{len(entry.atoms)} atoms, {len(result.centres)} windows in {result.seconds['total']:.1f} s: {counts}")
    print("wrote " + ", ".join(str(p) for p in paths))
    if len(result.centres) == 0:  # every atom unknown: say why, and what to do instead
        print(f"crystalface: {args.file} [{args.index}]: no {args.box:g} Å window holds {args.min_atoms} atoms "
              f"(the sample has {len(entry.atoms)}), nothing was classified; a periodic crystal (a cell with "
              "lattice vectors) goes through `crystalface classify`", file=sys.stderr)
        return 1
    return 0


def positive_int(text: str) -> int:
    """argparse type of a count that must be at least 1, such as ``--workers`` (a usage error otherwise, exit status 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _positive_length(text: str) -> float:
    """argparse type of a length in Å that must be positive (a usage error otherwise, exit status 2)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive length in Å, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crystalface",
        description="Which crystal structure is it? Robust classification from diffraction fingerprints.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"crystalface {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("classify", help="classify every structure of every file (any format ASE reads)")
    p.add_argument("files", nargs="+", help="structure files; every frame is classified")
    p.add_argument("--json", action="store_true", help="one JSON object per structure and line")
    p.add_argument("--model", help="model .safetensors file (default: the shipped model)")
    p.add_argument("--format", help="file format for ASE when it cannot guess (e.g. lammps-data)")
    p.add_argument("--index", default=":", help="frames to read, ASE syntax (default ':' = all)")
    p.add_argument("--workers", type=positive_int, default=None, help="processes (default: all CPUs)")
    p.add_argument("-o", "--output", help="write the records to this file as they are done: .jsonl or .csv "
                   "(progress bar on stderr); docs/scale.md")
    p.add_argument("--output-db", action="store_true", help="write crystalface_class, crystalface_confident, "
                   "crystalface_score (and crystalface_reason when not confident) onto the rows of the input ASE databases")
    p.add_argument("--resume", action="store_true", help="continue an interrupted --output: skip the structures "
                   "already in it (with --output-db only: the rows already labelled)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--scheduler", help="run on Dask: a scheduler address (tcp://host:8786) or 'local' "
                   "(a local cluster of --workers processes); needs pip install 'crystalface[dask]'")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar, and no summary of the classes at the end")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("fingerprint", help="write the DF-2D fingerprint picture of one structure")
    p.add_argument("file")
    p.add_argument("-o", "--output", default="fingerprint.png", help="picture file (default fingerprint.png)")
    p.add_argument("--index", type=int, default=0, help="frame of a multi-frame file (default 0)")
    p.add_argument("--format", help="file format for ASE when it cannot guess")
    p.add_argument("--npy", help="also save the (3, 64, 64) array to this .npy file")
    p.add_argument("--model", help="use this model's descriptor parameters")
    p.set_defaults(func=cmd_fingerprint)

    p = sub.add_parser("explain", help="attentive response maps: what each convolutional layer looks at in the fingerprint")
    p.add_argument("file")
    p.add_argument("-o", "--output", default="maps.png", help="picture file (default maps.png)")
    p.add_argument("--index", type=int, default=0, help="frame of a multi-frame file (default 0)")
    p.add_argument("--format", help="file format for ASE when it cannot guess")
    p.add_argument("--model", help="model .safetensors file (default: the shipped model)")
    p.add_argument("--target", help="class whose logit ranks the filters (default: the predicted class)")
    p.add_argument("--top-k", type=int, default=4, help="filters per layer kept individually (default 4)")
    p.add_argument("--json", help="also write prediction, filter activations and relevances to this JSON file")
    p.add_argument("--npz", help="also save the arrays (fingerprint, per-layer maps, top filters' maps) to this .npz file")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("dataset", help="generate the pristine prototype training set (ASE database)")
    p.add_argument("--size", type=int, default=14000, help="number of structures (default 14000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("-o", "--output", default="dataset.db", help="ASE database file (default dataset.db)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=cmd_dataset)

    p = sub.add_parser("train", help="train the network on a data set of pristine structures")
    p.add_argument("--dataset", default="dataset.db", help="ASE database from 'crystalface dataset'")
    p.add_argument("-o", "--output", default="model.safetensors", help="weights file; the model card goes beside it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=4, help="early stopping: epochs without a better validation loss")
    p.add_argument("--workers", type=positive_int, default=None, help="processes for the fingerprints (default: all CPUs)")
    p.add_argument("--scale-jitter", type=float, default=0.0, metavar="FRACTION",
                   help="augmentation: move each pristine structure's length unit by up to this fraction (default 0)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="classify real crystals, pristine and defective, and print the table")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("map", help="classify every region of a sample without lattice vectors (polycrystal, tomography, MD)")
    p.add_argument("file", help="the sample, any format ASE reads; lattice vectors are not needed")
    p.add_argument("-o", "--output", help="prefix of the outputs PREFIX.xyz, PREFIX.json, PREFIX.png (default: FILE_map)")
    p.add_argument("--box", type=_positive_length, default=16.0, help="edge of the sliding cubic window in Å (default 16)")
    p.add_argument("--stride", type=_positive_length, default=2.0, help="step between windows in Å (default 2)")
    p.add_argument("--min-atoms", type=int, default=50, help="skip windows with fewer atoms (default 50)")
    p.add_argument("--vote-radius", type=float, default=None,
                   help="windows whose centre is this close to an atom (Å) vote for its class (default: half the box)")
    p.add_argument("--species", action="store_true",
                   help="keep each element's scattering factor (default: all atoms alike, the lattice of the sites)")
    p.add_argument("--index", type=int, default=0, help="frame of a multi-frame file (default 0)")
    p.add_argument("--format", help="file format for ASE when it cannot guess")
    p.add_argument("--model", help="model .safetensors file (default: the shipped model)")
    p.add_argument("--workers", type=positive_int, default=2, help="processes (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_map)

    bench = sub.add_parser("benchmark", help="reproduce the paper's benchmarks").add_subparsers(dest="benchmark", required=True)
    experiment = sub.add_parser("experiment", help="reproduce the paper's experiments").add_subparsers(dest="experiment", required=True)
    from .evaluation import register_benchmarks, register_experiments

    register_benchmarks(bench)
    register_experiments(experiment)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .model import ModelError

    try:
        return args.func(args)
    except ModelError as exc:
        print(f"crystalface: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("crystalface: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
