"""A trained classifier: the network's weights plus the model card that says how they were made.

A model is two files side by side: ``NAME.safetensors`` (weights; loading them never executes code)
and ``NAME.json`` (the model card: classes, descriptor parameters, data set, training settings,
validation accuracy, package version and the SHA-256 of the weights file, checked on load).

The weights file may also hold the model's *novelty statistics* (tensors ``novelty.means`` and
``novelty.precision``, threshold in the card): where the training crystals lie in the network's
penultimate layer, so that a fingerprint far from all of them is flagged (:meth:`Model.novelty`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import runtime
from .network import ConvNet
from .pipeline import Descriptor

__all__ = ["Model", "ModelError", "load_model", "DEFAULT_MODEL"]

#: Name of the model shipped inside the package (crystalface/models/).
DEFAULT_MODEL = "default"
#: Fingerprints per network call. The activations of a batch of 16 (8 MB after the first
#: convolutions) stay in the CPU caches: 1.8 ms per structure on one thread, against 2.5 for 64
#: and 2.8 for 256 (benchmarks/throughput.md).
BATCH = 16


class ModelError(ValueError):
    """A model file that cannot be used (missing, tampered with, or made for other parameters)."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _card_digest(card: dict) -> str:
    """SHA-256 of the card's content without its own digest (canonical JSON): edits to a card are caught."""
    content = {k: v for k, v in card.items() if k != "card_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


@dataclass
class Model:
    """A trained network with its model card.

    Attributes
    ----------
    network : ConvNet
        The network, in evaluation mode.
    card : dict
        The model card (see module docstring).
    """

    network: ConvNet
    card: dict = field(default_factory=dict)
    novelty_stats: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.card["classes"])

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor.from_dict(self.card["descriptor"])

    def _outputs(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        """Class probabilities and penultimate activations side by side, (B, n_classes + dense), of
        fingerprints (B, 3, n, n), batch by batch: on ONNX Runtime (:mod:`crystalface.runtime`), or in
        PyTorch where ONNX Runtime cannot run the network."""
        self.network.eval()
        width = len(self.classes) + self.network.dense
        if len(images) == 0:
            return np.zeros((0, width), np.float32)
        made = runtime.session(self.network, images.shape[-1])
        if made is None:
            return self._batched(runtime.Outputs(self.network), images, batch_size, width)
        return np.concatenate([runtime.run(made, images[i : i + batch_size]) for i in range(0, len(images), batch_size)])

    @torch.inference_mode()
    def _batched(self, forward, images: np.ndarray, batch_size: int, width: int) -> np.ndarray:
        """``forward`` (a function of the network input) on fingerprints (B, 3, n, n), batch by batch, in PyTorch."""
        self.network.eval()
        out = []
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size], dtype=np.float32))
            out.append(forward(x.contiguous(memory_format=torch.channels_last)).numpy())
        return np.concatenate(out) if out else np.zeros((0, width), np.float32)

    def predict_proba(self, images: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
        """Class probabilities (B, n_classes) of fingerprints (B, 3, n, n), in batches."""
        return np.ascontiguousarray(self._outputs(images, batch_size)[:, : len(self.classes)])

    def features(self, images: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
        """Penultimate-layer activations (B, 128) of fingerprints (B, 3, n, n): what the last layer classifies."""
        return np.ascontiguousarray(self._outputs(images, batch_size)[:, len(self.classes) :])

    def predict(self, images: np.ndarray, batch_size: int = BATCH) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities (B, n_classes) and :meth:`novelty` (B,) or None, from one forward pass."""
        n = len(self.classes)
        both = self._outputs(images, batch_size)
        return np.ascontiguousarray(both[:, :n]), self._novelty_of(both[:, n:])

    def _ready(self) -> None:
        """Export the network for ONNX Runtime now, in this process (no session opened: the workers
        run it): a pickled copy then carries the graph."""
        runtime.prepare(self.network, self.descriptor.df2d.n_pixels)

    def __getstate__(self) -> dict:
        # the ONNX graph travels with the model (pool processes, Dask workers): they need not export it
        return {**self.__dict__, "_onnx_graph": runtime.exported(self.network)}

    def __setstate__(self, state: dict) -> None:
        graph = state.pop("_onnx_graph", None)
        self.__dict__.update(state)
        if graph is not None:
            runtime.remember(self.network, graph)

    def fit_novelty(self, images: np.ndarray, labels: Sequence[str]) -> None:
        """Store where training fingerprints lie in the penultimate layer, for :meth:`novelty`.

        Class means and one shared covariance (regularised by 1e-3 on its diagonal) of the features;
        the threshold is the largest squared Mahalanobis distance of a training fingerprint to the
        mean of its nearest class. A shared covariance was chosen by measurement: per-class
        covariances or a k-nearest-neighbour distance flagged no more unknown crystals and flagged
        more noisy known ones (docs/reliability.md).
        """
        feats = self.features(images).astype(np.float64)
        present, y = np.unique(np.array(list(labels)), return_inverse=True)  # classes seen in training
        means = np.stack([feats[y == c].mean(axis=0) for c in range(len(present))])
        resid = feats - means[y]
        cov = resid.T @ resid / len(resid) + 1e-3 * np.eye(feats.shape[1])
        self.novelty_stats = {
            "novelty.means": torch.from_numpy(means.astype(np.float32)),
            "novelty.precision": torch.from_numpy(np.linalg.inv(cov).astype(np.float32)),
        }
        distances = self._mahalanobis(feats)
        self.card["novelty"] = {
            "threshold": float(distances.max()),
            "statistic": "min over classes of the squared Mahalanobis distance in the penultimate layer (shared covariance)",
            "calibration": f"largest value over the {len(feats)} training fingerprints",
        }

    def _mahalanobis(self, feats: np.ndarray) -> np.ndarray:
        means = self.novelty_stats["novelty.means"].double().numpy()
        precision = self.novelty_stats["novelty.precision"].double().numpy()
        diff = np.asarray(feats, dtype=np.float64)[:, None, :] - means[None]
        # diff P diff for each fingerprint and class as B x C stacked (1, d) @ (d, d) products: each
        # value is computed alone, so it never depends on the other fingerprints of a batch (one
        # three-operand einsum summed the same terms in another order, 14x slower: ~0.1 ms a structure)
        return (np.matmul(diff[:, :, None, :], precision)[:, :, 0, :] * diff).sum(axis=-1).min(axis=1)

    def novelty(self, images: np.ndarray) -> np.ndarray | None:
        """How far each fingerprint lies from every class the network learned, in units of the threshold.

        Above 1: farther than any training crystal; above
        :data:`crystalface.confidence.NOVELTY_LIMIT` a prediction is not confident (an unknown kind of
        structure). None when the model has no novelty statistics (made by crystalface < 0.2).
        """
        return self._novelty_of(self.features(images)) if self._has_novelty() else None

    def _has_novelty(self) -> bool:
        return bool(self.novelty_stats) and "novelty" in self.card

    def _novelty_of(self, feats: np.ndarray) -> np.ndarray | None:
        if not self._has_novelty():
            return None
        return self._mahalanobis(feats) / self.card["novelty"]["threshold"]

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.safetensors) and the card beside it (.json, with the weights' SHA-256)."""
        path = Path(path).with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.network.state_dict().items()}
        state.update({k: v.contiguous() for k, v in self.novelty_stats.items()})
        save_file(state, str(path))
        card = dict(self.card)
        card["weights_sha256"] = _sha256(path)
        card["card_sha256"] = _card_digest(card)
        path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
        self.card = card
        return path


def _default_path() -> Path:
    return Path(str(resources.files("crystalface") / "models" / f"{DEFAULT_MODEL}.safetensors"))


def load_model(path: str | Path | None = None, descriptor: Descriptor | None = None) -> Model:
    """Load a trained model safely (safetensors; the card's SHA-256 must match the weights).

    Parameters
    ----------
    path : str or Path, optional
        The ``.safetensors`` file (its ``.json`` card beside it), or the card. Default: the model
        shipped with the package.
    descriptor : Descriptor, optional
        If given, the model is refused unless it was trained on fingerprints with these parameters.

    Examples
    --------
    >>> model = load_model()
    >>> model.classes
    ('bcc', 'bct139', 'bct141', 'diam', 'fcc', 'hex/rh', 'sc')
    """
    weights = Path(path) if path is not None else _default_path()
    weights = weights.with_suffix(".safetensors")
    card_path = weights.with_suffix(".json")
    for p in (weights, card_path):
        if not p.is_file():
            raise ModelError(f"model file not found: {p}")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"model card {card_path} is not valid JSON: {exc}") from None
    if card.get("card_sha256") != _card_digest(card):
        raise ModelError(f"model card {card_path} was changed after training (its SHA-256 does not match); refusing to load")
    expected = card.get("weights_sha256")
    if expected is None or _sha256(weights) != expected:
        raise ModelError(f"weights {weights} do not match the SHA-256 in their model card; refusing to load")
    try:
        model_descriptor = Descriptor.from_dict(card["descriptor"])
        network = ConvNet(n_classes=len(card["classes"]), n_pixels=model_descriptor.df2d.n_pixels, **card.get("network", {}))
        tensors = load_file(str(weights))
        novelty = {k: tensors.pop(k) for k in list(tensors) if k.startswith("novelty.")}
        network.load_state_dict(tensors)
    except (KeyError, TypeError, RuntimeError, ValueError, SafetensorError) as exc:
        raise ModelError(f"model {weights} cannot be loaded: {str(exc).splitlines()[0]}") from None
    if descriptor is not None and descriptor != model_descriptor:
        raise ModelError(
            f"model {weights} was trained for descriptor {model_descriptor.to_dict()}, "
            f"not {descriptor.to_dict()}; retrain it for these parameters"
        )
    network = network.to(memory_format=torch.channels_last).eval()
    return Model(network=network, card=card, novelty_stats=novelty)
