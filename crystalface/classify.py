"""Step 8 of the pipeline: from structures to predictions (class and the probability of every class)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np
from ase import Atoms

from .cell import StructureError, atoms_only
from .confidence import assess_with_reasons
from .pipeline import compute_fingerprints

if TYPE_CHECKING:  # the model module imports PyTorch: imported when a structure is classified
    from .model import Model

__all__ = ["Prediction", "classify"]


@dataclass(frozen=True)
class Prediction:
    """The answer for one structure.

    Attributes
    ----------
    label : str or None
        Most probable class; None when the structure failed.
    probabilities : dict
        Probability of every class, in the model's class order.
    source, index : str or None, int or None
        Where the structure came from (file and frame), when known.
    error : str or None
        One-line reason when the structure could not be classified.
    confident : bool or None
        False when the label should not be trusted: the structure is unlike every class the model
        knows (amorphous, a molecule in a box, several elements, ...) or the network hesitates;
        ``score >= crystalface.confidence.THRESHOLD``. None when failed.
    score : float or None
        Confidence score in [0, 1] (:func:`crystalface.confidence.assess`). None when failed.
    novelty : float or None
        Distance of the fingerprint from every class the network learned, in units of the farthest
        training crystal (:meth:`crystalface.model.Model.novelty`); above 1 the fingerprint lies farther
        than any training crystal, above ``crystalface.confidence.NOVELTY_LIMIT`` (2) the structure is of a
        kind the model never saw. None when failed or when the model has no novelty statistics.
    reason : str or None
        Why the prediction is not confident, in one line (several elements, vacuum, a basis the
        class cannot have, novelty, weak Bragg peaks, a hesitating network, or a lattice the label's
        class cannot have:
        :func:`crystalface.confidence.assess_with_reasons`); None when it is confident or failed.
    """

    label: str | None
    probabilities: dict[str, float] = field(default_factory=dict)
    source: str | None = None
    index: int | None = None
    error: str | None = None
    confident: bool | None = None
    score: float | None = None
    novelty: float | None = None
    reason: str | None = None

    @property
    def probability(self) -> float:
        """Probability of the predicted class (0 when failed)."""
        return self.probabilities.get(self.label, 0.0) if self.label else 0.0

    def to_dict(self) -> dict:
        """JSON-ready record: source, index, then label, confident, score, reason, novelty and probabilities, or error."""
        out = {"source": self.source, "index": self.index}
        if self.error is not None:
            out["error"] = self.error
        else:
            out["label"] = self.label
            out["confident"] = self.confident
            out["score"] = None if self.score is None else round(float(self.score), 6)
            out["reason"] = self.reason
            out["novelty"] = None if self.novelty is None else round(float(self.novelty), 6)
            out["probabilities"] = {k: round(float(v), 6) for k, v in self.probabilities.items()}
        return out


def classify(
    atoms: Atoms | Sequence[Atoms],
    model: Model | None = None,
    workers: int | None = 1,
    progress: bool = False,
) -> Prediction | list[Prediction]:
    """Classify one periodic structure or many, batched through the network.

    Parameters
    ----------
    atoms : ase.Atoms or sequence of ase.Atoms
        Periodic structure(s) with lattice vectors, in any cell choice and orientation.
    model : Model, optional
        Default: the model shipped with the package.
    workers : int, optional
        Processes (None: all CPUs). With more than one, a list is classified in chunks as
        :func:`crystalface.batch.classify_stream` classifies them: each process runs every step,
        the network included, on its chunk, and the predictions are the same as with one process.
    progress : bool
        Show a progress bar.

    Returns
    -------
    Prediction or list of Prediction
        For one structure a Prediction (or :class:`StructureError` if it cannot be classified,
        RuntimeError "internal error: ..." if a step failed unexpectedly on it); for a sequence one
        Prediction per structure, failures carrying ``error`` (a warning counts them), the others
        classified whatever failed.

    Examples
    --------
    >>> from ase.build import bulk
    >>> classify(bulk("Cu", "fcc", a=3.6)).label
    'fcc'
    """
    single = isinstance(atoms, Atoms)
    structures = atoms_only(atoms, "classify", many=True)
    if model is None:
        from .model import load_model

        model = load_model()
    if single:
        result = _classified(structures, model, progress)[0]
        if result.error:
            # a structure the method cannot handle, or (internal error) a step failing unexpectedly on it
            raise (RuntimeError if result.error.startswith("internal error") else StructureError)(result.error)
        return result
    if (workers or os.cpu_count() or 1) > 1:
        results = _in_chunks(structures, model, workers, progress)
    else:
        results = _classified(structures, model, progress)
    n_failed = sum(p.error is not None for p in results)
    if n_failed:
        warnings.warn(f"{n_failed} of {len(structures)} structures could not be classified (see Prediction.error)", stacklevel=2)
    return results


def _in_chunks(structures: Sequence[Atoms], model: "Model", workers: int | None, progress: bool) -> list[Prediction]:
    """:func:`classify` of many structures on a pool of ``workers`` processes, chunk by chunk, each
    process running every step on its chunk (:func:`crystalface.batch.classify_stream`). Computing
    only the fingerprints in the pool and the network here left the workers idle while the network
    ran: 268 -> 324 structures/s on 2 cores (docs/scale.md)."""
    from tqdm.auto import tqdm

    from .batch import classify_stream  # here: the batch module imports this one
    from .io import Entry

    entries = (Entry("<memory>", i, a, None) for i, a in enumerate(structures))
    return list(tqdm(classify_stream(entries, model, workers), total=len(structures), desc="classify",
                     unit="structure", disable=not progress, leave=False))


def _classified(structures: Sequence[Atoms], model: "Model", progress: bool) -> list[Prediction]:
    """One Prediction per structure, in this process, the failures carrying their error."""
    images, errors, lattices = compute_fingerprints(structures, model.descriptor, workers=1, progress=progress,
                                                 return_sites=True)
    ok = [i for i, e in enumerate(errors) if e is None]
    if len(ok) < len(structures):  # the images of those that did not fail (all: no copy)
        images = images[ok]
    proba, novelty = model.predict(images) if ok else (np.zeros((0, len(model.classes))), None)
    classes = model.classes
    confident, scores, reasons = assess_with_reasons(
        proba, images, [structures[i] for i in ok], model.descriptor.df2d, novelty,
        labels=[classes[int(np.argmax(p))] for p in proba], lattices=[lattices[i] for i in ok])
    results: list[Prediction] = []
    row = iter(zip(proba, confident, scores, novelty if novelty is not None else [None] * len(ok), reasons))
    for a, err in zip(structures, errors):
        source, index = a.info.get("source"), a.info.get("index")
        if err is not None:
            results.append(Prediction(label=None, source=source, index=index, error=err))
            continue
        p, sure, value, distance, why = next(row)
        results.append(
            Prediction(
                label=classes[int(np.argmax(p))],
                probabilities={c: float(v) for c, v in zip(classes, p)},
                source=source,
                index=index,
                confident=bool(sure),
                score=float(value),
                novelty=None if distance is None else float(distance),
                reason=why,
            )
        )
    return results
