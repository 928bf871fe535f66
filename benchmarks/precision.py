"""Does bfloat16 autocast keep the metrics? The same training in fp32 and in bf16, per architecture.

Each configuration is trained with ``loop.train`` twice per seed, once with
``precision="fp32"`` and once with ``"bf16"``, from the same initial weights, batches
and rotation angles; the only difference is the autocast. Any change of numerics sends
training down another path (a different kernel or thread count does too), so one seed
says little: the table gives the mean paired difference over seeds with its standard
error, and on how many seeds bf16 came out lower. The training throughput of each
precision at 224 px, batch size 10, is timed alongside (``loop.train`` itself), since
bf16 is only worth having where it is faster.

    python benchmarks/precision.py                 # both SqueezeNets x 6 seeds, ~3 min on 2 cores
    python benchmarks/precision.py --seeds 0 1 2 3 4 5 6 7 8 9 10 11
    python benchmarks/precision.py --archs mobilenet_v3_large --bf16-depthwise-fp32
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from _common import describe_machine, format_table, load_average, median, run
from torch import nn

from spheroid_hpo.data import SplitSpec, load_dataset
from spheroid_hpo.data.demo import write_demo_data
from spheroid_hpo.training import loop
from spheroid_hpo.training.device import resolve_device, seed_everything
from spheroid_hpo.training.hyperparams import Hyperparams
from spheroid_hpo.training.models import create_model

# By default the architectures precision="auto" trains in bf16; MobileNet V3 stays fp32.
ARCHITECTURES = ("squeezenet1_0", "squeezenet1_1")
# Learning rates at which each architecture learns the demo data in 20 epochs from
# scratch; SqueezeNet's ReLU head dies at 1e-3.
DEFAULT_LR = {"mobilenet_v3_large": 1e-3, "squeezenet1_0": 1e-4, "squeezenet1_1": 3e-4}
LATE_EPOCHS = 5


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(argv)
    device = resolve_device(args.device)
    print(describe_machine(device))
    print(f"{load_average()} at start")
    with tempfile.TemporaryDirectory(prefix="spheroid-bench-") as scratch:
        scratch = Path(scratch)
        write_demo_data(scratch / "data", per_class=args.per_class, size=args.image_size, seed=0)
        dataset = load_dataset(
            scratch / "data", image_size=args.image_size,
            split=SplitSpec(fractions=(0.6, 0.25, 0.15), manifest=scratch / "splits.csv"), splits=("train", "val"),
        ).to(device)
        print(
            f"demo data: {len(dataset.train)} train + {len(dataset.val)} val images at {args.image_size} px; "
            f"{args.epochs} epochs, batch size {args.batch_size}, rotation {args.rotation}, "
            f"BatchNorm momentum {args.bn_momentum}; seeds {args.seeds}"
            + ("; bf16 runs keep depthwise convolutions in fp32" if args.bf16_depthwise_fp32 else "") + "\n"
        )
        rows = []
        for architecture in args.archs:
            lr = args.lr if args.lr is not None else DEFAULT_LR.get(architecture, 1e-3)
            scores = {precision: [] for precision in ("fp32", "bf16")}
            for seed in args.seeds:
                for precision in scores:
                    history = _train(architecture, dataset, device=device, seed=seed, lr=lr,
                                     precision=precision, args=args)
                    scores[precision].append(history)
                    print(f"{architecture} seed {seed} {precision}: val macro-F1 per epoch "
                          f"{[round(s.val_macro_f1, 2) for s in history]}", flush=True)
            speed = _images_per_second(architecture, device=device, repeats=args.speed_repeats,
                                       depthwise_fp32=args.bf16_depthwise_fp32, size=args.speed_size)
            rows.append(_row(architecture, lr, scores, speed))
    print()
    print(format_table(
        ["architecture", "lr", f"fp32 last-{LATE_EPOCHS} F1", f"bf16 last-{LATE_EPOCHS} F1", "bf16 - fp32",
         "fp32 best F1", "bf16 best F1", "bf16 - fp32", "img/s fp32", "img/s bf16", "bf16 speed"],
        rows,
    ))
    print(f"\nlast-{LATE_EPOCHS} F1 = validation macro-F1 averaged over the last {LATE_EPOCHS} epochs, mean over "
          f"seeds; best F1 = the best epoch's, mean over seeds; bf16 - fp32 = mean paired difference over seeds "
          f"+- its standard error; img/s = "
          f"loop.train throughput at 224 px, batch size 10, median of {args.speed_repeats}. {load_average()} at end")


class _Float32Conv2d(nn.Conv2d):
    """A Conv2d that computes in float32 inside an autocast region (same parameters and state)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=input.device.type, enabled=False):
            return super().forward(input.float())


def _depthwise_in_fp32(model: nn.Module) -> nn.Module:
    """``model`` with its depthwise convolutions kept in fp32 under autocast (--bf16-depthwise-fp32)."""
    for layer in model.modules():
        if type(layer) is nn.Conv2d and layer.groups > 1 and layer.groups == layer.in_channels:
            layer.__class__ = _Float32Conv2d
    return model


def _train(architecture, dataset, *, device, seed, lr, precision, args) -> list[loop.EpochStats]:
    seed_everything(seed)
    model = create_model(architecture, num_classes=len(dataset.class_names), bn_momentum=args.bn_momentum)
    model.to(device, memory_format=torch.channels_last)
    if precision == "bf16" and args.bf16_depthwise_fp32:
        _depthwise_in_fp32(model)
    return loop.train(
        model, train_images=dataset.train.images, train_labels=dataset.train.labels,
        val_images=dataset.val.images, val_labels=dataset.val.labels, num_classes=len(dataset.class_names),
        hyperparams=Hyperparams(epochs=args.epochs, lr=lr, batch_size=args.batch_size, rotation=args.rotation),
        seed=seed,
        precision=precision,
    )


def _images_per_second(architecture: str, *, device: torch.device, repeats: int,
                       depthwise_fp32: bool, size: int = 224) -> dict[str, float]:
    """Training throughput of ``loop.train`` at 224 px, batch size 10, per precision: median, interleaved."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(40, 3, size, size, generator=generator).half().to(device)
    labels = (torch.arange(40) % 4).to(device)
    models = {name: create_model(architecture, num_classes=4).to(device) for name in ("fp32", "bf16")}
    if depthwise_fp32:
        _depthwise_in_fp32(models["bf16"])

    def epoch(name: str) -> float:
        (stats,) = loop.train(
            models[name], train_images=images, train_labels=labels, val_images=images[:10], val_labels=labels[:10],
            num_classes=4, hyperparams=Hyperparams(epochs=1, lr=1e-4, batch_size=10, rotation=20.0), seed=0,
            precision=name,
        )
        return stats.images_per_second

    for name in models:
        epoch(name)  # warm-up
    speeds = {name: [] for name in models}
    for round_number in range(repeats):
        for name in (models if round_number % 2 == 0 else list(models)[::-1]):
            speeds[name].append(epoch(name))
    return {name: median(values) for name, values in speeds.items()}


def _row(architecture, lr, scores, speed) -> list[str]:
    # The last epochs' mean: one epoch's macro-F1 on ~50 validation images jumps by +-0.05.
    late = {p: [statistics.mean(s.val_macro_f1 for s in h[-LATE_EPOCHS:]) for h in histories]
            for p, histories in scores.items()}
    best = {p: [max(s.val_macro_f1 for s in h) for h in histories] for p, histories in scores.items()}
    return [
        architecture, f"{lr:g}",
        f"{statistics.mean(late['fp32']):.3f}", f"{statistics.mean(late['bf16']):.3f}",
        _paired_difference(late["fp32"], late["bf16"]),
        f"{statistics.mean(best['fp32']):.3f}", f"{statistics.mean(best['bf16']):.3f}",
        _paired_difference(best["fp32"], best["bf16"]),
        f"{speed['fp32']:.1f}", f"{speed['bf16']:.1f}", f"{speed['bf16'] / speed['fp32']:.2f}x",
    ]


def _paired_difference(fp32: list[float], bf16: list[float]) -> str:
    """Mean bf16 - fp32 over seeds (same initial weights, batches and angles), +- its standard error,
    and how many seeds came out lower in bf16."""
    differences = [b - f for f, b in zip(fp32, bf16)]
    error = statistics.stdev(differences) / len(differences) ** 0.5 if len(differences) > 1 else float("nan")
    lower = sum(d < 0 for d in differences)
    return f"{statistics.mean(differences):+.3f} +- {error:.3f} ({lower}/{len(differences)} lower)"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--archs", nargs="+", default=list(ARCHITECTURES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=None, help="one lr for all (default: per architecture)")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--rotation", type=float, default=20.0)
    parser.add_argument("--bn-momentum", type=float, default=0.1,
                        help="BatchNorm momentum (default 0.1; torchvision's 0.01 leaves MobileNet near chance here)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--speed-repeats", type=int, default=3, help="timed 224 px epochs per precision")
    parser.add_argument("--speed-size", type=int, default=224, help=argparse.SUPPRESS)
    parser.add_argument("--bf16-depthwise-fp32", action="store_true",
                        help="in the bf16 runs, keep depthwise convolutions in fp32 (a variant the engine dropped)")
    parser.add_argument("--smoke", action="store_true", help="one tiny round: does it run")
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(archs=["squeezenet1_1"], seeds=[0], epochs=1, image_size=32, per_class=4, speed_repeats=1,
                          speed_size=32)
    return args


if __name__ == "__main__":
    run(main)
