"""Step 9 of the pipeline: attentive response maps — which pixels of the fingerprint the network looks at.

For every convolutional filter, the rectified activation map it produces for one fingerprint is
projected back to the input by a deconvolutional network (Zeiler & Fergus, ECCV 2014): the same
layers run backwards, max-pooling undone with the switches of the forward pass, convolutions
transposed, and a ReLU applied to the signal wherever the forward pass had one. Backpropagating
``0.5 * sum(a_k**2)`` with captum's ``NeuronDeconvolution`` does exactly this, because its gradient at
the layer is the activation map ``a_k`` itself and captum replaces each ReLU's gradient by the ReLU of
the incoming signal. The result is a (3, n, n) map in fingerprint space per filter; summing the maps
of a layer shows what that layer responds to, and the last layer summed and averaged over pristine
fingerprints of a class is the class's "learned template" (Ziletti et al. 2018, Fig. 3).

Which filters matter *for a class* is told by their contribution to that class's logit z_c,
``sum over pixels of a_k * dz_c/da_k`` (gradient x activation): the top filters of each layer are
ranked by it, as the paper shows the top filters of a layer for the predicted class.

>>> from ase.build import bulk
>>> maps = response_maps(load_model(), bulk("Cu", "fcc", a=3.6))  # doctest: +SKIP
>>> maps.label, maps.layers[-1].map.shape  # doctest: +SKIP
('fcc', (3, 64, 64))
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from ase import Atoms
from torch import nn

from .model import Model

__all__ = ["LayerResponse", "ResponseMaps", "response_maps", "class_templates", "plot_response_maps",
           "save_response_maps", "save_templates"]

#: Filters x fingerprints pushed backwards together (one backward pass), bounding memory.
_BATCH = 256


@dataclass(frozen=True)
class LayerResponse:
    """The response maps of one convolutional layer for one fingerprint.

    Attributes
    ----------
    name : str
        ``conv1`` ... ``conv6``, in the order of the forward pass.
    map : numpy.ndarray
        (3, n, n): the deconvolutions of all the layer's filters, summed.
    activation : numpy.ndarray
        (K,): each filter's rectified activation summed over its feature map.
    relevance : numpy.ndarray
        (K,): each filter's contribution to the target class logit, sum of activation x gradient.
    top_filters : numpy.ndarray
        (k,): indices of the filters with the largest relevance, most relevant first.
    filter_maps : numpy.ndarray
        (k, 3, n, n): the deconvolution of each of ``top_filters``.
    """

    name: str
    map: np.ndarray
    activation: np.ndarray
    relevance: np.ndarray
    top_filters: np.ndarray
    filter_maps: np.ndarray

    @property
    def n_filters(self) -> int:
        return len(self.activation)


@dataclass(frozen=True)
class ResponseMaps:
    """Attentive response maps of one fingerprint, layer by layer.

    Attributes
    ----------
    fingerprint : numpy.ndarray
        (3, n, n) input image.
    classes : tuple of str
        The model's classes.
    probabilities : numpy.ndarray
        (n_classes,) the model's prediction.
    target : str
        Class whose logit ranks the filters (default the predicted class).
    layers : tuple of LayerResponse
        One per convolutional layer, input side first.
    """

    fingerprint: np.ndarray
    classes: tuple[str, ...]
    probabilities: np.ndarray
    target: str
    layers: tuple[LayerResponse, ...]

    @property
    def label(self) -> str:
        """The predicted class."""
        return self.classes[int(np.argmax(self.probabilities))]

    @property
    def maps(self) -> np.ndarray:
        """(n_layers, 3, n, n): every layer's summed map."""
        return np.stack([layer.map for layer in self.layers])

    def to_dict(self) -> dict:
        """JSON-ready summary: prediction and, per layer, filter activations, relevances and top filters (no images)."""
        return {
            "label": self.label,
            "target": self.target,
            "probabilities": {c: round(float(p), 6) for c, p in zip(self.classes, self.probabilities)},
            "layers": [
                {
                    "name": layer.name,
                    "n_filters": layer.n_filters,
                    "top_filters": [int(i) for i in layer.top_filters],
                    "activation": [round(float(v), 6) for v in layer.activation],
                    "relevance": [round(float(v), 6) for v in layer.relevance],
                    "map_abs_max": round(float(np.abs(layer.map).max()), 6),
                }
                for layer in self.layers
            ],
        }


def _conv_relus(network: nn.Module) -> list[nn.ReLU]:
    """The ReLU following each convolution of ``network.features``: where each filter's map is rectified."""
    modules = list(network.features)
    relus = []
    for i, module in enumerate(modules):
        if isinstance(module, nn.Conv2d):
            if i + 1 >= len(modules) or not isinstance(modules[i + 1], nn.ReLU):
                raise ValueError(f"expected a ReLU after convolution {i} of network.features, got {modules[i + 1:i + 2]}")
            relus.append(modules[i + 1])
    for module in network.modules():
        if isinstance(module, nn.ReLU) and module.inplace:
            # captum overrides ReLU gradients with module hooks, which in-place ReLUs break
            raise ValueError("response maps need ReLUs that are not in-place (nn.ReLU(inplace=False))")
    return relus


def _as_images(model: Model, images) -> np.ndarray:
    n = model.descriptor.df2d.n_pixels
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1:] != (3, n, n):
        raise ValueError(f"expected fingerprints of shape (3, {n}, {n}) for this model, got {images.shape[1:]}")
    if not np.all(np.isfinite(images)):
        raise ValueError("fingerprint contains NaN or infinite values")
    return images


def _deconvolve(network: nn.Module, relu: nn.ReLU, images: np.ndarray, filters: np.ndarray | None = None,
                reduce: bool = False) -> np.ndarray:
    """Deconvolution of filters' activation maps of layer ``relu`` back to input space.

    Every (image, filter) pair is one row of a batch, so a layer costs one backward pass per
    ``_BATCH`` rows. Returns (B, K, 3, n, n), or (B, 3, n, n) summed over filters with ``reduce``.
    """
    try:
        from captum.attr import NeuronDeconvolution
    except ImportError:
        raise ImportError("response maps need captum (pip install captum)") from None

    deconv = NeuronDeconvolution(network, relu)
    modules = list(network.features)
    conv = modules[[id(m) for m in modules].index(id(relu)) - 1]  # the convolution this ReLU rectifies
    filters = np.arange(conv.out_channels) if filters is None else np.asarray(filters)
    pairs = [(b, k) for b in range(len(images)) for k in filters]
    x = torch.from_numpy(images)
    n = images.shape[-1]
    out = np.zeros((len(images), 3, n, n) if reduce else (len(images), len(filters), 3, n, n), np.float32)
    for start in range(0, len(pairs), _BATCH):
        chunk = pairs[start : start + _BATCH]
        b_idx = torch.tensor([b for b, _ in chunk])
        k_idx = torch.tensor([int(k) for _, k in chunk])
        rows = torch.arange(len(chunk))
        inputs = x[b_idx].clone().requires_grad_(True)

        def selector(activations, rows=rows, k_idx=k_idx):
            # gradient of 0.5 * sum(a_k^2) at the layer is a_k: the filter's own map, all others zero
            return 0.5 * (activations[rows, k_idx] ** 2).sum(dim=(1, 2))

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU", category=UserWarning)
            result = deconv.attribute(inputs, neuron_selector=selector).detach().numpy()
        if reduce:
            np.add.at(out, b_idx.numpy(), result)
        else:
            positions = {k: j for j, k in enumerate(filters)}
            for row, (b, k) in enumerate(chunk):
                out[b, positions[k]] = result[row]
    return out


def _activations_and_relevance(network: nn.Module, relus: Sequence[nn.ReLU], image: np.ndarray, target: int):
    """Per layer: (K,) summed activation and (K,) gradient x activation of the target logit."""
    stored: list[torch.Tensor] = []
    handles = [r.register_forward_hook(lambda module, inputs, output: stored.append(output)) for r in relus]
    try:
        with torch.enable_grad():
            logits = network(torch.from_numpy(image[None]))
            grads = torch.autograd.grad(logits[0, target], stored)
    finally:
        for h in handles:
            h.remove()
    activation = [a[0].detach().sum(dim=(1, 2)).numpy() for a in stored]
    relevance = [(a[0] * g[0]).detach().sum(dim=(1, 2)).numpy() for a, g in zip(stored, grads)]
    return activation, relevance


def response_maps(model: Model, image: np.ndarray | Atoms, target: str | int | None = None,
                  top_k: int = 4) -> ResponseMaps:
    """Attentive response maps of one fingerprint for every convolutional layer (Zeiler & Fergus 2014).

    Parameters
    ----------
    model : Model
        A trained model (:func:`crystalface.load_model`).
    image : numpy.ndarray or ase.Atoms
        A (3, n, n) fingerprint made with ``model.descriptor``, or a periodic structure to fingerprint.
    target : str or int, optional
        Class (name or index) whose logit ranks the filters; default the predicted class.
    top_k : int
        Filters per layer whose individual maps are kept (paper figure: four).

    Returns
    -------
    ResponseMaps
        Per layer the summed map (3, n, n), the top filters' maps and every filter's activation and relevance.

    Examples
    --------
    >>> from ase.build import bulk
    >>> maps = response_maps(load_model(), bulk("Fe", "bcc", a=2.87))  # doctest: +SKIP
    >>> [layer.map.shape for layer in maps.layers][0]  # doctest: +SKIP
    (3, 64, 64)
    """
    if isinstance(image, Atoms):
        image = model.descriptor(image)
    images = _as_images(model, np.asarray(image)[None])
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    network = model.network.eval()  # dropout off: the maps of the network that classifies
    relus = _conv_relus(network)
    probabilities = model.predict_proba(images)[0]
    classes = model.classes
    if target is None:
        target_index = int(np.argmax(probabilities))
    elif isinstance(target, str):
        if target not in classes:
            raise ValueError(f"target must be one of the model's classes {classes}, got {target!r}")
        target_index = classes.index(target)
    else:
        target_index = int(target)
        if not 0 <= target_index < len(classes):
            raise ValueError(f"target index must be in [0, {len(classes)}), got {target}")
    activation, relevance = _activations_and_relevance(network, relus, images[0], target_index)
    layers = []
    for i, relu in enumerate(relus):
        per_filter = _deconvolve(network, relu, images)[0]  # (K, 3, n, n)
        top = np.argsort(-relevance[i], kind="stable")[:top_k]
        layers.append(LayerResponse(
            name=f"conv{i + 1}", map=per_filter.sum(axis=0), activation=activation[i], relevance=relevance[i],
            top_filters=top, filter_maps=per_filter[top],
        ))
    return ResponseMaps(fingerprint=images[0], classes=classes, probabilities=probabilities,
                        target=classes[target_index], layers=tuple(layers))


def class_templates(model: Model, images_by_class: Mapping[str, np.ndarray], layer: int = -1) -> dict[str, np.ndarray]:
    """The "learned template" of each class: a layer's filters' deconvolutions summed, averaged over fingerprints.

    Each fingerprint's summed map is divided by its largest absolute value before averaging, so
    every structure counts equally whatever the scale of its activations.

    Parameters
    ----------
    model : Model
        A trained model.
    images_by_class : mapping
        Class name -> (B, 3, n, n) pristine fingerprints of that class (B >= 1).
    layer : int
        Convolutional layer, as an index into the six (default -1, the last: the paper's template).

    Returns
    -------
    dict
        Class name -> (3, n, n) template, in the order given.

    Examples
    --------
    >>> from ase.build import bulk
    >>> model = load_model()  # doctest: +SKIP
    >>> class_templates(model, {"fcc": model.descriptor(bulk("Cu", "fcc", a=3.6))[None]})["fcc"].shape  # doctest: +SKIP
    (3, 64, 64)
    """
    network = model.network.eval()
    relus = _conv_relus(network)
    try:
        relu = relus[layer]
    except IndexError:
        raise ValueError(f"layer must index one of the {len(relus)} convolutional layers, got {layer}") from None
    templates = {}
    for name, images in images_by_class.items():
        images = _as_images(model, images)
        if len(images) == 0:
            raise ValueError(f"no fingerprints given for class {name!r}")
        summed = _deconvolve(network, relu, images, reduce=True)
        peak = np.abs(summed).reshape(len(summed), -1).max(axis=1)
        templates[name] = (summed / np.where(peak > 0, peak, 1.0)[:, None, None, None]).mean(axis=0)
    return templates


# ---------------------------------------------------------------------------------------------
# Pictures

def _pyplot():
    from .plotting import _pyplot

    return _pyplot()


def _composite(image: np.ndarray) -> np.ndarray:
    """(3, n, n) map -> (n, n, 3) RGB image scaled to [0, 1] by its maximum (channels keep their ratios)."""
    peak = float(image.max())
    return np.moveaxis(image / peak if peak > 0 else image, 0, -1)


def _channel_row(axes, image: np.ndarray, title: str, magnitude: bool):
    # A deconvolution has both signs (transposed convolutions with signed weights); what a filter
    # responds to is where the map is large, so maps are shown as |map|, on one scale for the three
    # channels so that the channel the network relies on stands out.
    image = np.abs(image) if magnitude else image
    axes[0].imshow(_composite(image), origin="lower")
    axes[0].set_ylabel(title, fontsize=9)
    shared = max(float(image.max()), 1e-12)
    for c, cmap in enumerate(("Reds", "Greens", "Blues")):
        vmax = shared if magnitude else max(float(image[c].max()), 1e-12)
        axes[c + 1].imshow(image[c], origin="lower", cmap=cmap, vmin=0, vmax=vmax)
    for a in axes:
        a.set_xticks([])
        a.set_yticks([])


def plot_response_maps(maps: ResponseMaps, title: str | None = None):
    """Figure: the fingerprint, then per layer |summed map| as RGB and per colour channel (one scale per row).

    Returns the matplotlib Figure.
    """
    plt = _pyplot()
    rows = 1 + len(maps.layers)
    fig, axes = plt.subplots(rows, 4, figsize=(8.4, 2.05 * rows + 0.5), squeeze=False)
    _channel_row(axes[0], maps.fingerprint, "fingerprint", magnitude=False)
    for ax, head in zip(axes[0], ("RGB", "R: rotations about x", "G: about y", "B: about z")):
        ax.set_title(head, fontsize=9)
    for row, layer in zip(axes[1:], maps.layers):
        _channel_row(row, layer.map, f"{layer.name} ({layer.n_filters} filters)", magnitude=True)
    p = float(maps.probabilities.max())
    fig.suptitle(f"{title + ': ' if title else ''}predicted {maps.label} ({p:.3f}); filters ranked for {maps.target}",
                 fontsize=10)
    fig.tight_layout()
    return fig


def save_response_maps(maps: ResponseMaps, path: str | Path, title: str | None = None) -> Path:
    """Write :func:`plot_response_maps` to ``path`` (PNG or any format matplotlib writes)."""
    plt = _pyplot()
    fig = plot_response_maps(maps, title=title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def save_templates(templates: Mapping[str, np.ndarray], path: str | Path, title: str | None = None) -> Path:
    """Write the learned templates, one row per class: |template| as RGB, then per colour channel."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(templates), 4, figsize=(8.4, 2.05 * len(templates) + 0.5), squeeze=False)
    for row, (name, image) in zip(axes, templates.items()):
        _channel_row(row, image, name, magnitude=True)
    for ax, head in zip(axes[0], ("|template| RGB", "R: rotations about x", "G: about y", "B: about z")):
        ax.set_title(head, fontsize=9)
    fig.suptitle(title or "learned templates: last convolutional layer, summed and averaged", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
