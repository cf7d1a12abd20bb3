"""Tests of crystalface.train: the split, the training loop, and the data set -> model command."""

from __future__ import annotations

import numpy as np
import pytest

from crystalface import load_model
from crystalface.dataset import make_dataset
from crystalface.train import ScaleJitter, stratified_split, train, train_from_dataset


def test_stratified_split_keeps_every_class_in_both_parts():
    labels = np.repeat(np.arange(7), [10, 20, 30, 5, 8, 100, 3])
    train_idx, val_idx = stratified_split(labels, 0.1, seed=1)
    assert len(np.intersect1d(train_idx, val_idx)) == 0
    assert len(train_idx) + len(val_idx) == len(labels)
    for c in range(7):
        n = (labels == c).sum()
        assert (labels[val_idx] == c).sum() == max(1, round(0.1 * n))
    again = stratified_split(labels, 0.1, seed=1)
    assert np.array_equal(again[1], val_idx)
    assert not np.array_equal(stratified_split(labels, 0.1, seed=2)[1], val_idx)


def test_training_separates_two_easy_classes_and_is_deterministic():
    rng = np.random.default_rng(0)
    a = rng.random((40, 3, 64, 64), dtype=np.float32) * 0.1
    b = a.copy()
    b[:, :, 20:40, 20:40] += 0.8  # a bright square: trivially separable
    images = np.concatenate([a, b])
    labels = ["fcc"] * 40 + ["bcc"] * 40
    m1 = train(images, labels, seed=3, max_epochs=3, progress=False)
    m2 = train(images, labels, seed=3, max_epochs=3, progress=False)
    p1, p2 = m1.predict_proba(images), m2.predict_proba(images)
    assert np.array_equal(p1, p2)
    predicted = np.array(m1.classes)[p1.argmax(1)]
    assert (predicted == np.array(labels)).mean() == 1.0
    card = m1.card
    assert card["training"]["n_validation"] == 8 and card["training"]["n_train"] == 72
    assert 1 <= card["training"]["epochs_run"] <= 3
    assert card["validation_accuracy"] == 1.0


def test_training_stores_novelty_statistics_that_flag_unseen_images(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.random((40, 3, 64, 64), dtype=np.float32) * 0.1
    b = a.copy()
    b[:, :, 20:40, 20:40] += 0.8
    labels = ["fcc"] * 40 + ["bcc"] * 40
    model = train(np.concatenate([a, b]), labels, seed=0, max_epochs=2, progress=False)
    seen = model.novelty(np.concatenate([a, b]))
    train_idx, _ = stratified_split([0] * 40 + [1] * 40, 0.1, seed=0)
    assert seen[train_idx].max() == pytest.approx(1.0, rel=1e-4)  # the threshold is the farthest training image
    unseen = np.zeros((2, 3, 64, 64), np.float32)
    unseen[:, 0, :8] = 1.0  # a bright stripe in one channel: like neither class
    assert (model.novelty(unseen) > 1).all()
    again = load_model(model.save(tmp_path / "m.safetensors"))
    assert np.array_equal(again.novelty(unseen), model.novelty(unseen))
    assert again.card["novelty"]["threshold"] == model.card["novelty"]["threshold"]


def test_unknown_labels_are_rejected():
    with pytest.raises(ValueError, match="not among the classes"):
        train(np.zeros((2, 3, 64, 64), np.float32), ["fcc", "hcp"], progress=False)


def test_train_from_dataset_writes_a_loadable_model(tmp_path):
    db = make_dataset(tmp_path / "tiny.db", size=21, seed=4, progress=False)
    model = train_from_dataset(db, tmp_path / "tiny.safetensors", workers=1, max_epochs=1, progress=False)
    again = load_model(tmp_path / "tiny.safetensors")
    assert again.card["dataset"] == {"file": "tiny.db", "size": 21, "seed": 4, "counts": {c: 3 for c in again.classes}}
    assert again.card["weights_sha256"] == model.card["weights_sha256"]


def test_scale_jitter_moves_the_length_unit_reproducibly_whatever_the_workers():
    from ase.build import bulk

    from crystalface import Descriptor, fingerprint
    from crystalface.pipeline import compute_fingerprints

    structures = [bulk(s, x, a=a) for s, x, a in [("Cu", "fcc", 3.6), ("Fe", "bcc", 2.87), ("Si", "diamond", 5.43)] * 2]
    for i, atoms in enumerate(structures):
        atoms.info["index"] = i
    jitter = ScaleJitter(0.05, seed=1)
    factors = [jitter.factor(i) for i in range(len(structures))]
    assert all(0.95 <= f <= 1.05 for f in factors) and len(set(factors)) == len(factors)
    assert factors == [ScaleJitter(0.05, seed=1).factor(i) for i in range(len(structures))]
    assert factors != [ScaleJitter(0.05, seed=2).factor(i) for i in range(len(structures))]
    one, _ = compute_fingerprints(structures, augment=jitter, workers=1)
    two, _ = compute_fingerprints(structures, augment=jitter, workers=2, chunk_size=2)
    assert np.allclose(one, two, atol=1e-5)  # batches of other sizes: float rounding only
    # the same crystal (structures 0 and 3) at two length units: two different images, each the
    # fingerprint of the exactly scaled cluster times its factor
    assert np.abs(one[0] - one[3]).max() > 0.05
    descriptor = Descriptor()
    from crystalface.scaling import scale

    manual = scale(descriptor.cluster(structures[3]))
    manual.positions *= factors[3]
    assert np.allclose(one[3], fingerprint(manual), atol=1e-6)
    with pytest.raises(ValueError, match="index"):
        jitter(bulk("Cu", "fcc", a=3.6))  # no info["index"]
    with pytest.raises(ValueError, match="jitter"):
        ScaleJitter(0.7)


def test_train_from_dataset_records_the_augmentation(tmp_path):
    db = make_dataset(tmp_path / "tiny.db", size=14, seed=4, progress=False)
    model = train_from_dataset(db, tmp_path / "j.safetensors", workers=1, max_epochs=1, progress=False, scale_jitter=0.03)
    assert model.card["augmentation"]["scale_jitter"] == 0.03
    assert load_model(tmp_path / "j.safetensors").card["augmentation"] == model.card["augmentation"]
