"""One training epoch: our trainer against a naive paper-style pipeline, same model, same images.

The baseline is what the paper's setup looks like in PyTorch: torchvision ``ImageFolder``
reading and decoding every file every epoch, PIL ``Resize`` + ``RandomRotation`` +
``ToTensor`` + ``Normalize``, a ``DataLoader``, the model in its default memory format,
default Adam, ``loss.item()`` after every step, and a validation pass under ``no_grad``.
Ours is ``loop.train`` for one epoch, exactly as ``spheroid-hpo train`` and every trial
call it. An epoch is a pass over the training images plus a pass over the validation
images, as both pipelines do each epoch; images per second counts training images.

Both run in this process on the same images, alternating (baseline first in even
rounds, ours first in odd ones) after one warm-up epoch each; medians over the rounds.

    python benchmarks/epoch_speed.py                        # CPU, 3 architectures, ~4 min on 2 cores
    python benchmarks/epoch_speed.py --device cuda --per-class 100 --repeats 5
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import describe_machine, format_table, load_average, median, run
from torch.utils.data import DataLoader, Subset
from torchvision import transforms
from torchvision.datasets import ImageFolder

from spheroid_hpo.data import Dataset, load_dataset
from spheroid_hpo.data.demo import write_demo_data
from spheroid_hpo.training import inference, loop
from spheroid_hpo.training.device import resolve_device, resolve_precision, seed_everything
from spheroid_hpo.training.hyperparams import Hyperparams
from spheroid_hpo.training.models import create_model

ARCHITECTURES = ("mobilenet_v3_large", "squeezenet1_0", "squeezenet1_1")


@dataclass(frozen=True)
class EpochTiming:
    epoch_seconds: float
    train_seconds: float
    loading_seconds: float = 0.0  # the baseline's wait for the DataLoader's next training batch


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(argv)
    device = resolve_device(args.device)
    print(describe_machine(device))
    print(f"{load_average()} at start")
    with tempfile.TemporaryDirectory(prefix="spheroid-bench-") as scratch:
        scratch = Path(scratch)
        data_dir = args.data
        if data_dir is None:
            data_dir = scratch / "data"
            write_demo_data(data_dir, per_class=args.per_class, size=args.source_size, seed=0)
        started = time.perf_counter()
        dataset = load_dataset(
            data_dir, image_size=args.image_size, splits=("train", "val"), manifest_path=scratch / "splits.csv"
        ).to(device)
        decode_seconds = time.perf_counter() - started
        print(
            f"data: {data_dir if args.data else 'demo data'}, {len(dataset.train)} train + {len(dataset.val)} val "
            f"images, {args.source_size if args.data is None else 'original'} px files -> {args.image_size} px; "
            f"ours decodes them once per worker in {decode_seconds:.1f} s, the baseline every epoch"
        )
        print(
            f"batch size {args.batch_size}, rotation up to {args.rotation} deg, lr {args.lr}; "
            f"ours: precision {args.precision} -> {_autocast_names(args.precision, device)}; "
            f"baseline DataLoader workers {args.loader_workers}; {args.repeats} rounds after a warm-up epoch"
        )
        if device.type == "cpu":
            print("both run in this process, so the baseline also gets the allocator setting loop.train makes "
                  "(benchmarks/allocator.py), and the ratio leaves that gain out")
        print()
        rows = []
        for architecture in args.archs:
            baseline, ours = _compare(architecture, dataset=dataset, data_dir=Path(data_dir), device=device, args=args)
            train_images = len(dataset.train)
            base_rate = train_images / median([t.epoch_seconds for t in baseline])
            our_rate = train_images / median([t.epoch_seconds for t in ours])
            paired = sorted(b.epoch_seconds / o.epoch_seconds for b, o in zip(baseline, ours))
            rows.append([
                architecture,
                f"{train_images / median([t.train_seconds for t in baseline]):.1f}",
                f"{train_images / median([t.train_seconds for t in ours]):.1f}",
                f"{base_rate:.1f}", f"{our_rate:.1f}", f"{our_rate / base_rate:.2f}x",
                f"{paired[0]:.2f}-{paired[-1]:.2f}",
                f"{median([t.loading_seconds / t.epoch_seconds for t in baseline]):.0%}",
            ])
            print(f"{architecture}: baseline {base_rate:.1f} img/s, ours {our_rate:.1f} img/s, "
                  f"{our_rate / base_rate:.2f}x  ({load_average()})", flush=True)
    print()
    print(format_table(
        ["architecture", "train img/s base", "train img/s ours", "epoch img/s base", "epoch img/s ours",
         "speed-up", "per-round range", "base loading"],
        rows,
    ))
    print(f"\n{load_average()} at end; speed-up = median epoch time of the baseline / ours; train img/s of ours "
          f"is what loop.train reports (EpochStats.images_per_second, a trial's train_images_per_second); "
          f"base loading = share of the baseline's epoch spent waiting for its DataLoader")


def _compare(architecture: str, *, dataset: Dataset, data_dir: Path, device: torch.device, args):
    """Epoch timings of the baseline and of ours, interleaved, warm-up epoch excluded."""
    num_classes = len(dataset.class_names)
    train_loader, val_loader = _paper_style_loaders(data_dir, dataset, args)

    seed_everything(0)
    baseline_model = create_model(architecture, num_classes=num_classes).to(device)
    baseline_optimizer = torch.optim.Adam(baseline_model.parameters(), lr=args.lr)
    seed_everything(0)
    # What run_training and build_objective do before loop.train.
    our_model = create_model(architecture, num_classes=num_classes).to(device, memory_format=torch.channels_last)

    def run_baseline() -> EpochTiming:
        return _paper_style_epoch(baseline_model, baseline_optimizer, train_loader, val_loader, device)

    def run_ours() -> EpochTiming:
        _synchronize(device)
        started = time.perf_counter()
        (stats,) = loop.train(
            our_model, train_images=dataset.train.images, train_labels=dataset.train.labels,
            val_images=dataset.val.images, val_labels=dataset.val.labels, num_classes=num_classes,
            hyperparams=Hyperparams(epochs=1, lr=args.lr, batch_size=args.batch_size, rotation=args.rotation), seed=0,
            precision=args.precision,
        )
        _synchronize(device)
        return EpochTiming(time.perf_counter() - started, len(dataset.train) / stats.images_per_second)

    run_baseline(), run_ours()  # warm-up: allocator, oneDNN/cuDNN kernel choice, file cache
    baseline, ours = [], []
    for round_number in range(args.repeats):
        if round_number % 2 == 0:
            baseline.append(run_baseline())
            ours.append(run_ours())
        else:
            ours.append(run_ours())
            baseline.append(run_baseline())
    return baseline, ours


def _paper_style_loaders(data_dir: Path, dataset: Dataset, args) -> tuple[DataLoader, DataLoader]:
    """ImageFolder + PIL transforms over exactly the images of our train and validation splits."""
    mean, std = inference.IMAGENET_MEAN, inference.IMAGENET_STD
    size = (args.image_size, args.image_size)
    train_set = ImageFolder(data_dir, transform=transforms.Compose([
        transforms.Resize(size), transforms.RandomRotation(args.rotation),
        transforms.ToTensor(), transforms.Normalize(mean, std),
    ]))
    val_set = ImageFolder(data_dir, transform=transforms.Compose([
        transforms.Resize(size), transforms.ToTensor(), transforms.Normalize(mean, std),
    ]))
    if tuple(train_set.classes) != dataset.class_names:
        raise SystemExit(f"ImageFolder classes {train_set.classes} differ from ours {dataset.class_names}")
    index_of = {Path(path).relative_to(data_dir).as_posix(): i for i, (path, _) in enumerate(train_set.samples)}
    train = Subset(train_set, [index_of[path] for path in dataset.train.paths])
    val = Subset(val_set, [index_of[path] for path in dataset.val.paths])
    # BatchNorm cannot train on a last batch of one image; ours skips it the same way.
    drop_last = len(train) % args.batch_size == 1
    workers = args.loader_workers
    return (
        DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=workers, drop_last=drop_last,
                   persistent_workers=workers > 0),
        DataLoader(val, batch_size=args.batch_size, num_workers=workers, persistent_workers=workers > 0),
    )


def _paper_style_epoch(model, optimizer, train_loader, val_loader, device) -> EpochTiming:
    """The textbook loop (one step per batch, a host sync for the running loss, then validation),
    timing the wait for each training batch."""
    _synchronize(device)
    started = time.perf_counter()
    model.train()
    running_loss, correct, loading = 0.0, 0, 0.0
    batches = iter(train_loader)
    while True:
        waited = time.perf_counter()
        batch = next(batches, None)
        loading += time.perf_counter() - waited
        if batch is None:
            break
        inputs, labels = batch[0].to(device), batch[1].to(device)
        optimizer.zero_grad()
        outputs = model(inputs)
        loss = F.cross_entropy(outputs, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item() * inputs.size(0)
        correct += (outputs.argmax(dim=1) == labels).sum().item()
    _synchronize(device)
    train_seconds = time.perf_counter() - started
    model.eval()
    predictions = []
    with torch.no_grad():
        for inputs, _ in val_loader:
            predictions.append(model(inputs.to(device)).argmax(dim=1).cpu())
    _synchronize(device)
    return EpochTiming(time.perf_counter() - started, train_seconds, loading)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast_names(precision: str, device: torch.device) -> str:
    names = []
    for architecture in ARCHITECTURES:
        model = create_model(architecture, num_classes=4)
        dtype = resolve_precision(precision, device, model=model)
        names.append(f"{architecture} {'fp32' if dtype is None else str(dtype).removeprefix('torch.')}")
    return ", ".join(names)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--archs", nargs="+", default=list(ARCHITECTURES), help="architectures to time")
    parser.add_argument("--per-class", type=int, default=30,
                        help="demo images per class (mean); 70%% train, 15%% val (default 30)")
    parser.add_argument("--source-size", type=int, default=256, help="side of the demo image files (default 256)")
    parser.add_argument("--data", type=Path, default=None, help="time on this data folder instead of demo data")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--rotation", type=float, default=20.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--precision", default="auto", help="ours: auto, fp32, bf16 or fp16 (default auto)")
    parser.add_argument("--loader-workers", type=int, default=0, help="baseline DataLoader workers (default 0)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per architecture (default 3)")
    parser.add_argument("--smoke", action="store_true", help="one tiny round: does it run")
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(archs=["squeezenet1_1"], per_class=3, source_size=32, image_size=32, repeats=1)
    return args


if __name__ == "__main__":
    run(main)
