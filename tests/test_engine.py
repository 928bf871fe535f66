"""The training loop on generated demo data: it learns, it repeats, it resumes, it fails loudly.

A small CNN stands in for the registry's architectures: the loop is model-agnostic, and
a 3-block network learns the 32 px demo images in about a second, where a SqueezeNet
needs far more data and epochs than a unit test can spend.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from spheroid_hpo.data import SplitSpec, load_dataset
from spheroid_hpo.data.demo import CLASS_NAMES, write_demo_data
from spheroid_hpo.errors import InputError
from spheroid_hpo.training import inference, loop
from spheroid_hpo.training.device import resolve_precision, seed_everything
from spheroid_hpo.training.hyperparams import Hyperparams

NUM_CLASSES = len(CLASS_NAMES)
TIMING_FIELDS = ("seconds", "images_per_second")


def small_cnn(width: int = 16) -> nn.Module:
    """Three conv-BN-ReLU-pool blocks and a dropout head: BatchNorm and dropout, like the real models."""

    def block(inputs: int, outputs: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs),
            nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )

    return nn.Sequential(
        block(3, width), block(width, 2 * width), block(2 * width, 4 * width),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(4 * width, NUM_CLASSES),
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """About 120 demo images at 32 px: half to train on, a third to validate on (42 images)."""
    folder = tmp_path_factory.mktemp("engine")
    write_demo_data(folder / "data", per_class=30, size=32, seed=0)
    return load_dataset(
        folder / "data", image_size=32, split=SplitSpec(fractions=(0.5, 0.35, 0.15), manifest=folder / "splits.csv"),
        splits=("train", "val"),
    )


def train_small(demo, *, seed: int = 0, epochs: int, precision: str = "fp32", model: nn.Module | None = None,
                lr_schedule: str = "constant", **options) -> tuple[nn.Module, list[loop.EpochStats]]:
    seed_everything(seed)
    model = model if model is not None else small_cnn()
    history = loop.train(
        model, train_images=demo.train.images, train_labels=demo.train.labels,
        val_images=demo.val.images, val_labels=demo.val.labels, num_classes=NUM_CLASSES,
        hyperparams=Hyperparams(epochs=epochs, lr=3e-3, batch_size=16, rotation=15.0, lr_schedule=lr_schedule),
        seed=seed, precision=precision, **options,
    )
    return model, history



def metrics_of(history: list[loop.EpochStats]) -> list[dict]:
    """What each epoch measured, without its timings and restored flag."""
    return [{k: v for k, v in dataclasses.asdict(s).items() if k not in TIMING_FIELDS + ("restored",)}
            for s in history]


# Guessing uniformly scores a validation macro-F1 of about 0.25 on four classes, always
# answering the largest class about 0.14, and a network that does not learn stays below 0.4.
# With seeds 0-4, in fp32 and bf16, the best epoch reaches 0.75-0.87 and the last four
# epochs average 0.60-0.79 (42 validation images make single epochs jumpy), so these
# bounds only fail when the network stops telling the cell structures apart.
BEST_MACRO_F1 = 0.65
LAST_EPOCHS_MACRO_F1 = 0.55


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_learns_the_demo_classes_well_above_chance(demo, precision):
    _, history = train_small(demo, epochs=14, precision=precision)

    assert max(s.val_macro_f1 for s in history) >= BEST_MACRO_F1
    assert sum(s.val_macro_f1 for s in history[-4:]) / 4 >= LAST_EPOCHS_MACRO_F1
    assert history[-1].train_loss < 0.75 * history[0].train_loss
    assert all(s.images_per_second > 0 and s.seconds > 0 for s in history)


def test_same_seed_gives_identical_metrics_and_on_epoch_sees_each_epoch(demo):
    seen = []
    _, first = train_small(demo, epochs=3, on_epoch=seen.append)
    _, again = train_small(demo, epochs=3)
    _, other_seed = train_small(demo, epochs=3, seed=1)

    assert metrics_of(first) == metrics_of(again)
    assert metrics_of(first) != metrics_of(other_seed)
    assert seen == first and [s.epoch for s in seen] == [1, 2, 3]


@pytest.mark.parametrize("lr_schedule", ["constant", "cosine"])
def test_each_epoch_steps_at_its_scheduled_learning_rate(demo, monkeypatch, lr_schedule):
    rates: list[tuple[int, float]] = []
    real_step = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    epochs_seen = []
    train_small(demo, epochs=4, lr_schedule=lr_schedule, on_epoch=lambda s: epochs_seen.append(len(rates)))
    per_epoch = [rates[end - 1] for end in epochs_seen]
    # Computed here, not by Hyperparams.learning_rate: half a cosine from 3e-3 down towards 0.
    expected = ([3e-3] * 4 if lr_schedule == "constant"
                else [3e-3 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)])
    assert per_epoch == pytest.approx(expected, rel=1e-12)
    assert len(set(rates[:epochs_seen[0]])) == 1  # one rate through each epoch


class _Killed(Exception):
    """Stands in for a worker killed right after an epoch's checkpoint was written."""


@pytest.mark.parametrize("lr_schedule", ["constant", "cosine"])
def test_resuming_from_a_checkpoint_ends_where_an_uninterrupted_run_ends(demo, tmp_path, lr_schedule):
    uninterrupted_model, uninterrupted = train_small(demo, epochs=4, lr_schedule=lr_schedule)

    checkpoint = tmp_path / "trial.pt"

    def kill_after_two(stats):
        if stats.epoch == 2:
            raise _Killed

    with pytest.raises(_Killed):
        train_small(demo, epochs=4, lr_schedule=lr_schedule, checkpoint_path=checkpoint, on_epoch=kill_after_two)
    assert checkpoint.exists()
    # A new process: seeded again, fresh weights, global RNG back at the seed.
    seen = []
    resumed_model, resumed = train_small(demo, epochs=4, lr_schedule=lr_schedule, checkpoint_path=checkpoint,
                                         on_epoch=seen.append)

    assert metrics_of(resumed) == metrics_of(uninterrupted)
    assert [(s.epoch, s.restored) for s in seen] == [(1, True), (2, True), (3, False), (4, False)]
    final, expected = resumed_model.state_dict(), uninterrupted_model.state_dict()
    assert all(torch.equal(final[name], expected[name]) for name in expected)


def test_a_nan_loss_stops_training_with_a_clear_error(demo):
    poisoned = torch.full_like(demo.train.images, float("nan"))
    seed_everything(0)
    with pytest.raises(FloatingPointError,
                       match=r"training loss became nan in epoch 1 \(lr=0.003\).*lower learning rate"):
        loop.train(
            small_cnn(), train_images=poisoned, train_labels=demo.train.labels,
            val_images=demo.val.images, val_labels=demo.val.labels, num_classes=NUM_CLASSES,
            hyperparams=Hyperparams(epochs=2, lr=3e-3, batch_size=16, rotation=0.0), seed=0, precision="fp32",
        )


def test_predictions_do_not_depend_on_the_evaluation_batch_size(demo):
    # predict_logits sizes its batches for the device; the logits must not depend on it.
    model, _ = train_small(demo, epochs=1)
    chosen = inference.predict_logits(model, demo.val.images)
    in_sevens = inference.predict_logits(model, demo.val.images, batch_size=7)
    assert chosen.shape == (len(demo.val), NUM_CLASSES)
    torch.testing.assert_close(chosen, in_sevens, atol=1e-4, rtol=1e-4)


def test_training_puts_the_model_in_channels_last_whatever_the_caller_did(demo):
    model = small_cnn()
    assert not model[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    train_small(demo, epochs=1, model=model)
    assert model[0][0].weight.is_contiguous(memory_format=torch.channels_last)


def depthwise_cnn() -> nn.Module:
    """A MobileNet-like pair: a pointwise convolution, then a depthwise one."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, NUM_CLASSES),
    )


def test_auto_precision_is_bf16_only_where_the_hardware_runs_it_and_not_for_depthwise_models():
    cpu = torch.device("cpu")
    native_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()

    assert resolve_precision("auto", cpu, model=small_cnn()) == (torch.bfloat16 if native_bf16 else None)
    # bf16 cost MobileNet V3 validation macro-F1 (BENCHMARKS.md), whatever the hardware.
    assert resolve_precision("auto", cpu, model=depthwise_cnn()) is None
    # An explicit choice is always honoured.
    assert resolve_precision("bf16", cpu, model=depthwise_cnn()) == torch.bfloat16
    assert resolve_precision("fp32", cpu, model=small_cnn()) is None


def test_auto_precision_trains_a_depthwise_model_in_fp32(demo):
    model = depthwise_cnn()
    output_dtypes = set()
    model[0].register_forward_hook(lambda module, args, output: output_dtypes.add(output.dtype))

    train_small(demo, epochs=1, precision="auto", model=model)
    assert output_dtypes == {torch.float32}

    output_dtypes.clear()
    train_small(demo, epochs=1, precision="bf16", model=model)
    assert output_dtypes == {torch.bfloat16}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": 0}, r"epochs must lie in \[1, 10000\]"),
        ({"batch_size": 1}, r"batch_size must lie in \[2, 4096\]"),
        ({"lr": 0.0}, r"lr must lie in \(0.0, 1.0\]"),
        ({"precision": "fp8"}, "unknown precision 'fp8'"),
    ],
)
def test_bad_settings_are_input_errors(demo, options, message):
    settings = {"epochs": 1, "lr": 1e-3, "batch_size": 8, "rotation": 0.0, "precision": "fp32", **options}
    precision = settings.pop("precision")
    with pytest.raises(InputError, match=message):
        loop.train(
            small_cnn(), train_images=demo.train.images, train_labels=demo.train.labels,
            val_images=demo.val.images, val_labels=demo.val.labels, num_classes=NUM_CLASSES,
            hyperparams=Hyperparams(**settings), seed=0, precision=precision,
        )
