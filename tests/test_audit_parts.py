"""The label audit's three parts on their own, in seconds: each fold's retraining never sees the
images it predicts, the suspects are cleanlab's ranking, and the page shows each suspect's given
and suggested label (the rule itself: tests/test_audit_rule.py). tests/test_audit_labels.py (slow:
minutes of retraining) checks the same on whole audits; these are the mutation check's quick witnesses."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from spheroid_hpo.results.audit import HeldOut, find_suspects
from spheroid_hpo.results.audit._page import audit_page
from spheroid_hpo.results.audit._probabilities import held_out_probabilities
from spheroid_hpo.results.audit._source import plan_from_run
from spheroid_hpo.training import loop
from spheroid_hpo.training.hyperparams import Hyperparams
from spheroid_hpo.training.run import run_training


def _held_out(seed: int = 0, n: int = 40) -> HeldOut:
    """Out-of-sample probabilities of a model that is mostly right, some given labels wrong."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    logits = rng.normal(0.0, 1.0, (n, 3))
    logits[np.arange(n), labels] += 2.5
    flipped = rng.choice(n, 6, replace=False)
    labels[flipped] = (labels[flipped] + 1) % 3  # these given labels disagree with what the images show
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return HeldOut(paths=tuple(f"c{label}/img{i:02d}.png" for i, label in enumerate(labels)),
                   splits=tuple("train" if i % 5 else "val" for i in range(n)), labels=labels,
                   probabilities=probabilities, fold_of=np.arange(n) % 3, class_names=("a", "b", "c"),
                   images=torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed)).half(),
                   folds=3, seconds=0.0)


def test_the_page_shows_each_suspect_with_its_given_and_suggested_label():
    held_out = _held_out()
    suspects = find_suspects(held_out)
    assert any(s.given_label != s.suggested_label for s in suspects)  # else a swap would go unseen
    page = audit_page(held_out, suspects, description="a test", summary="flagged", top=len(suspects))
    assert page.count('<img src="data:image/png;base64,') == len(suspects)
    for s in suspects:
        assert f"given {s.given_label} ({s.given_probability:.2f})" in page
        assert f"suggested {s.suggested_label} ({s.suggested_probability:.2f})" in page


def test_each_fold_trains_without_the_images_it_predicts(demo_dir, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(demo_dir, data)
    run_training(data_dir=data, out_dir=tmp_path / "run", arch="squeezenet1_1", image_size=32, device="cpu",
                 hyperparams=Hyperparams(epochs=1, lr=1e-3, rotation=0.0, batch_size=8), progress=False)
    plan = plan_from_run(tmp_path / "run", data_dir=None)
    folds = []

    def keys(images: torch.Tensor) -> set[str]:  # one short key per image: a failure stays readable
        return {hashlib.sha1(image.numpy().tobytes()).hexdigest()[:10] for image in images.cpu()}

    def recorded(model, **kwargs):  # what each fold trains on, then the real (one-epoch) training
        folds.append((keys(kwargs["train_images"]), keys(kwargs["val_images"])))
        return train(model, **kwargs)

    train = loop.train

    monkeypatch.setattr(loop, "train", recorded)
    with tempfile.TemporaryDirectory() as scratch:
        held_out = held_out_probabilities(plan, folds=3, manifest_path=Path(scratch) / "splits.csv",
                                          device=torch.device("cpu"), log=lambda line: None)
    assert len(folds) == 3
    for trained_on, predicted in folds:
        assert trained_on and predicted and not trained_on & predicted, sorted(trained_on & predicted)
    # Each image is predicted by exactly one fold (the demo images all differ).
    assert sum(len(predicted) for _, predicted in folds) == len(held_out.paths)
    assert not np.isnan(held_out.probabilities).any()


def test_each_images_probability_is_its_fold_models_view_average_at_the_folds_temperature():
    """What cleanlab ranks: softmax(logits / T) of the fold's model, averaged over the 8 rotations and flips."""
    from types import SimpleNamespace

    from spheroid_hpo.results.audit._probabilities import _probabilities
    from spheroid_hpo.training.inference import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 6 * 6, 3)).eval()  # no symmetry at all
    fitted = SimpleNamespace(model=model, autocast_dtype=None, calibration=SimpleNamespace(temperature=2.5))
    images = torch.rand(5, 3, 6, 6)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    views = [torch.flip(torch.rot90(images, k, dims=(2, 3)), dims=(3,)) if mirrored else torch.rot90(images, k, (2, 3))
             for k in range(4) for mirrored in (False, True)]
    with torch.no_grad():
        expected = torch.stack([torch.softmax(model((v - mean) / std) / 2.5, dim=1) for v in views]).mean(dim=0)
    got = _probabilities(fitted, images)
    assert got.dtype == torch.float64 and got.shape == (5, 3)
    torch.testing.assert_close(got.float(), expected, rtol=1e-5, atol=1e-6)
