"""The whole ``spheroid-hpo train`` process against a paper-style training script, 10 epochs each.

Where ``epoch_speed.py`` times one epoch inside one process, this times what a user waits for:
two separate processes started from the shell on the same image folder, from interpreter
start to exit, so imports, reading and decoding the images, every epoch's validation, the
test evaluation and writing the model all count.

- **Paper-style script** (this file run with ``--child paper``): what the paper's setup looks
  like in PyTorch. torchvision ``ImageFolder`` decoding every file every epoch, PIL ``Resize`` +
  ``RandomRotation`` + ``ToTensor`` + ``Normalize``, a ``DataLoader`` (no worker processes), a
  random 70/15/15 split, the model in its default layout, default ``Adam``, ``loss.item()``
  after every step, a validation pass each epoch, the test split scored with scikit-learn at
  the end, the state dict saved.
- **Ours**: ``spheroid-hpo train --data FOLDER --epochs 10 ...`` as a user types it, which also
  checks the folder for duplicates, writes the split, calibrates, draws the figures and writes
  metrics.json.

Same architecture, images, image size (224 px), batch size 10, lr 1e-4 and rotation 20 degrees;
processes alternate (paper-style first in even rounds), medians over the rounds.

    python benchmarks/train_process.py                          # 2 architectures x 3 rounds, ~10 min on 2 cores
    python benchmarks/train_process.py --archs squeezenet1_1 --rounds 5
    python benchmarks/train_process.py --smoke                  # one tiny round: does it run
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _common import cpu_model, format_table, load_average, median, run

PAPER = "paper"
ARCHITECTURES = ("mobilenet_v3_large", "squeezenet1_0")


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(argv)
    if args.child == PAPER:
        _paper_style_training(args)
        return
    from spheroid_hpo.data.demo import write_demo_data

    print(f"CPU {cpu_model()}; {time.strftime('%Y-%m-%d')}; {load_average()} at start")
    with tempfile.TemporaryDirectory(prefix="spheroid-bench-") as scratch:
        scratch = Path(scratch)
        data = scratch / "data"
        write_demo_data(data, per_class=args.per_class, size=args.source_size, seed=0)
        images = sum(1 for _ in data.rglob("*.png"))
        print(f"data: demo data, {images} files of {args.source_size} px -> {args.image_size} px; {args.epochs} "
              f"epochs, batch size 10, lr 1e-4, rotation 20; {args.rounds} rounds per architecture\n")
        rows = []
        for architecture in args.archs:
            times: dict[str, list[float]] = {PAPER: [], "ours": []}
            for round_number in range(args.rounds):
                order = (PAPER, "ours") if round_number % 2 == 0 else ("ours", PAPER)
                for which in order:
                    out = scratch / f"{which}-{architecture}-{round_number}"
                    times[which].append(_timed(_command(which, architecture, data, out, args)))
                print(f"{architecture} round {round_number}: paper-style {times[PAPER][-1]:.1f} s, "
                      f"ours {times['ours'][-1]:.1f} s ({load_average()})", flush=True)
            paired = sorted(p / o for p, o in zip(times[PAPER], times["ours"]))
            rows.append([architecture, f"{median(times[PAPER]):.1f}", f"{median(times['ours']):.1f}",
                         f"{median(times[PAPER]) / median(times['ours']):.2f}x", f"{paired[0]:.2f}-{paired[-1]:.2f}"])
    print()
    print(format_table(["architecture", "paper-style s", "spheroid-hpo train s", "speed-up", "per-round range"],
                       rows))
    print(f"\nwall seconds per process, start to exit, medians; {load_average()} at end")


def _command(which: str, architecture: str, data: Path, out: Path, args) -> list[str]:
    common = ["--epochs", str(args.epochs), "--image-size", str(args.image_size)]
    if which == PAPER:
        return [sys.executable, __file__, "--child", PAPER, "--arch", architecture, "--data", str(data),
                "--out", str(out), *common]
    return [sys.executable, "-m", "spheroid_hpo", "train", "--data", str(data), "--out", str(out),
            "--arch", architecture, "--batch-size", "10", "--lr", "1e-4", "--rotation", "20", "--device", "cpu",
            *common]


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({finished.returncode}):\n{finished.stderr[-2000:]}")
    return seconds


def _paper_style_training(args) -> None:
    """The paper's setup as a plain PyTorch script (see the module docstring)."""
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import f1_score
    from torch.utils.data import DataLoader, Subset
    from torchvision import models, transforms
    from torchvision.datasets import ImageFolder

    torch.manual_seed(0)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    size = (args.image_size, args.image_size)
    augment = transforms.Compose([transforms.Resize(size), transforms.RandomRotation(20),
                                  transforms.ToTensor(), transforms.Normalize(mean, std)])
    plain = transforms.Compose([transforms.Resize(size), transforms.ToTensor(),
                                transforms.Normalize(mean, std)])
    train_set, eval_set = ImageFolder(args.data, transform=augment), ImageFolder(args.data, transform=plain)
    order = torch.randperm(len(train_set)).tolist()
    n_train, n_val = int(0.7 * len(order)), int(0.15 * len(order))
    train = Subset(train_set, order[:n_train])
    val, test = Subset(eval_set, order[n_train:n_train + n_val]), Subset(eval_set, order[n_train + n_val:])
    train_loader = DataLoader(train, batch_size=10, shuffle=True, drop_last=len(train) % 10 == 1)
    model = getattr(models, args.arch)(num_classes=len(train_set.classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def predict(split) -> tuple[list[int], list[int]]:
        model.eval()
        truth, predicted = [], []
        with torch.no_grad():
            for inputs, labels in DataLoader(split, batch_size=10):
                predicted += model(inputs).argmax(dim=1).tolist()
                truth += labels.tolist()
        return truth, predicted

    for epoch in range(args.epochs):
        model.train()
        running_loss = 0.0
        for inputs, labels in train_loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(inputs), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * inputs.size(0)
        truth, predicted = predict(val)
        print(f"epoch {epoch + 1}: loss {running_loss / len(train):.3f}, "
              f"val macro-F1 {f1_score(truth, predicted, average='macro', zero_division=0):.3f}")
    truth, predicted = predict(test)
    print(f"test macro-F1 {f1_score(truth, predicted, average='macro', zero_division=0):.3f}")
    Path(args.out).mkdir(parents=True)
    torch.save(model.state_dict(), Path(args.out) / "model.pt")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHITECTURES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=30, help="demo images per class (default 30)")
    parser.add_argument("--source-size", type=int, default=256, help="side of the demo files (default 256)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--smoke", action="store_true", help="one tiny round: does it run")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--arch", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.archs, args.rounds, args.epochs = ["squeezenet1_1"], 1, 1
        args.per_class, args.source_size, args.image_size = 4, 32, 32
    return args


if __name__ == "__main__":
    run(main)
