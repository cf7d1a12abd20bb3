"""A trained classifier: the network's weights plus the model card that says how they were made.

A model is two files side by side: ``NAME.safetensors`` (weights; loading them never executes code)
and ``NAME.json`` (the model card: classes, descriptor parameters, data set, training settings,
validation accuracy, package version and the SHA-256 of the weights file, checked on load).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .network import ConvNet
from .pipeline import Descriptor

__all__ = ["Model", "ModelError", "load_model", "DEFAULT_MODEL"]

#: Name of the model shipped inside the package (crystalface/models/).
DEFAULT_MODEL = "default"


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

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.card["classes"])

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor.from_dict(self.card["descriptor"])

    @torch.inference_mode()
    def predict_proba(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities (B, n_classes) of fingerprints (B, 3, n, n), in batches."""
        self.network.eval()
        out = []
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size], dtype=np.float32))
            x = x.contiguous(memory_format=torch.channels_last)
            out.append(torch.softmax(self.network(x), dim=1).numpy())
        n = len(self.classes)
        return np.concatenate(out) if out else np.zeros((0, n), np.float32)

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.safetensors) and the card beside it (.json, with the weights' SHA-256)."""
        path = Path(path).with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.network.state_dict().items()}
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
        network.load_state_dict(load_file(str(weights)))
    except (KeyError, TypeError, RuntimeError, ValueError, SafetensorError) as exc:
        raise ModelError(f"model {weights} cannot be loaded: {str(exc).splitlines()[0]}") from None
    if descriptor is not None and descriptor != model_descriptor:
        raise ModelError(
            f"model {weights} was trained for descriptor {model_descriptor.to_dict()}, "
            f"not {descriptor.to_dict()}; retrain it for these parameters"
        )
    network = network.to(memory_format=torch.channels_last).eval()
    return Model(network=network, card=card)
