"""Where a training step's time goes, and what each of the engine's choices buys.

For each architecture, at 224 px and batch size 10, this times (interleaved, medians):

- the batch preparation ``loop.train`` does per step: gathering a batch from the float16
  cache and converting it to float32, ``rotate_batch``, normalising into channels_last;
- one training step (forward, loss, backward, optimiser), adding one choice at a time:
  the paper-style start (NCHW, default Adam), channels_last, the fused Adam kernel, and
  bf16 autocast (which ``precision="auto"`` uses where the CPU has native bf16, except
  for models with depthwise convolutions);
- Adam's step alone, foreach against fused;
- evaluation of 60 images: batches of 10 under ``no_grad`` in NCHW fp32 against what
  ``inference.predict_logits`` does (inference mode, channels_last, autocast, on CPU batches
  of about 16 at 224 px), and against it in batches of 64, its GPU default;
- the step with 1 thread against all cores.

    python benchmarks/step_breakdown.py                 # ~3 min on 2 cores
    python benchmarks/step_breakdown.py --archs squeezenet1_0 --repeats 10
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from _common import describe_machine, format_table, load_average, median, run

from spheroid_hpo.data import rotate_batch
from spheroid_hpo.training import inference
from spheroid_hpo.training.device import resolve_device, resolve_precision
from spheroid_hpo.training.models import create_model

ARCHITECTURES = ("mobilenet_v3_large", "squeezenet1_0", "squeezenet1_1")


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(argv)
    device = resolve_device(args.device)
    bf16 = resolve_precision("auto", device) is not None  # no model given: the hardware decides
    print(describe_machine(device))
    print(f"{load_average()} at start; native bf16: {'yes' if bf16 else 'no'}\n")
    generator = torch.Generator().manual_seed(0)
    cache = torch.rand(100, 3, args.image_size, args.image_size, generator=generator).half()
    cache = cache.to(device, memory_format=torch.channels_last)
    index = torch.randperm(100, generator=generator)[: args.batch_size].to(device)
    labels = torch.arange(args.batch_size, device=device) % 4
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1)
                 for v in (inference.IMAGENET_MEAN, inference.IMAGENET_STD))

    batch = cache[index].float()
    rotated = rotate_batch(batch, max_degrees=20, generator=generator)
    prep = _time({
        "gather + fp16->fp32": lambda: cache[index].float(),
        "rotate_batch": lambda: rotate_batch(batch, max_degrees=20, generator=generator),
        "normalise + channels_last": lambda: ((rotated - mean) / std).contiguous(memory_format=torch.channels_last),
    }, repeats=args.repeats, device=device)
    print(format_table(["batch preparation", "ms"], [[name, f"{ms:.1f}"] for name, ms in prep.items()]))
    print()

    rows = []
    for architecture in args.archs:
        nchw = ((rotated - mean) / std).contiguous()
        nhwc = nchw.contiguous(memory_format=torch.channels_last)
        # What loop.train autocasts this architecture to with precision="auto".
        engine_dtype = resolve_precision("auto", device, model=create_model(architecture, num_classes=4))
        variants = {
            "paper-style: NCHW, default Adam": _step(architecture, nchw, labels, channels_last=False, adam={}),
            "+ channels_last": _step(architecture, nhwc, labels, channels_last=True, adam={"foreach": True}),
            "+ fused Adam": _step(architecture, nhwc, labels, channels_last=True, adam={"fused": True}),
        }
        if bf16:
            variants["+ bf16 autocast"] = _step(
                architecture, nhwc, labels, channels_last=True, adam={"fused": True}, autocast=torch.bfloat16,
            )
        engine_variant = "+ bf16 autocast" if engine_dtype is not None else "+ fused Adam"
        steps = _time(variants, repeats=args.repeats, device=device)
        base = steps["paper-style: NCHW, default Adam"]
        for name, ms in steps.items():
            marker = "  <- loop.train (auto)" if name == engine_variant else ""
            rows.append([architecture if name.startswith("paper") else "", name + marker, f"{ms:.0f}",
                         f"{base / ms:.2f}x"])
        optimizer_ms = _optimizer_steps(architecture, device=device, repeats=args.repeats)
        rows.append(["", "Adam step alone: foreach -> fused",
                     f"{optimizer_ms['foreach']:.1f} -> {optimizer_ms['fused']:.1f}",
                     f"{optimizer_ms['foreach'] / optimizer_ms['fused']:.1f}x"])
        evaluation = _evaluations(architecture, cache[:60], mean, std, engine_dtype, device=device,
                                  repeats=args.repeats)
        rows.append(["", "eval 60 images: no_grad NCHW bs 10 -> predict_logits",
                     f"{evaluation['paper']:.0f} -> {evaluation['ours']:.0f}",
                     f"{evaluation['paper'] / evaluation['ours']:.2f}x"])
        rows.append(["", "  predict_logits in batches of 64 instead",
                     f"{evaluation['ours in batches of 64']:.0f}",
                     f"{evaluation['paper'] / evaluation['ours in batches of 64']:.2f}x"])
        if device.type == "cpu":
            cores = torch.get_num_threads()
            threads = _thread_counts(variants[engine_variant], repeats=args.repeats)
            rows.append(["", f"loop.train step: 1 thread -> {cores} threads",
                         f"{threads[1]:.0f} -> {threads[cores]:.0f}", f"{threads[1] / threads[cores]:.2f}x"])
        print(f"{architecture} done ({load_average()})", flush=True)
    print()
    step = f"training step at batch size {args.batch_size}, {args.image_size} px"
    print(format_table(["architecture", step, "ms", "vs paper-style"], rows))
    print(f"\nmedians of {args.repeats} interleaved runs; {load_average()} at end")


def _step(architecture, images, labels, *, channels_last: bool, adam: dict,
          autocast: torch.dtype | None = None) -> Callable[[], None]:
    """One training step of a fresh ``architecture`` set up as described, as a function."""
    torch.manual_seed(0)
    model = create_model(architecture, num_classes=4).to(images.device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, **adam)

    def step() -> None:
        with torch.autocast(images.device.type, dtype=autocast, enabled=autocast is not None):
            loss = F.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _optimizer_steps(architecture: str, *, device, repeats: int) -> dict[str, float]:
    """Adam's step alone on the architecture's parameters with gradients in place, foreach against fused."""
    model = create_model(architecture, num_classes=4).to(device)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter) * 1e-3
    optimizers = {kind: torch.optim.Adam(model.parameters(), lr=1e-4, **{kind: True}) for kind in ("foreach", "fused")}
    return _time({kind: optimizer.step for kind, optimizer in optimizers.items()}, repeats=repeats, device=device)


def _evaluations(architecture, images, mean, std, autocast_dtype, *, device, repeats: int) -> dict[str, float]:
    paper_model = create_model(architecture, num_classes=4).to(device).eval()
    our_model = create_model(architecture, num_classes=4).to(device, memory_format=torch.channels_last)
    nchw = ((images.float() - mean) / std).contiguous()

    def paper() -> None:
        with torch.no_grad():
            for start in range(0, len(nchw), 10):
                paper_model(nchw[start : start + 10]).argmax(dim=1)

    def ours(batch_size: int | None = None) -> None:
        inference.predict_logits(our_model, images, autocast_dtype=autocast_dtype, batch_size=batch_size).argmax(dim=1)

    return _time({"paper": paper, "ours": ours, "ours in batches of 64": lambda: ours(64)},
                 repeats=repeats, device=device)


def _thread_counts(step: Callable[[], None], *, repeats: int) -> dict[int, float]:
    cores = torch.get_num_threads()
    times = {1: [], cores: []}
    step()
    for _ in range(repeats):
        for count in times:
            torch.set_num_threads(count)
            step()  # the first step after a change re-plans oneDNN's work split
            started = time.perf_counter()
            step()
            times[count].append(1000 * (time.perf_counter() - started))
    torch.set_num_threads(cores)
    return {count: median(values) for count, values in times.items()}


def _time(functions: dict[str, Callable[[], object]], *, repeats: int, device) -> dict[str, float]:
    """Median milliseconds of each function, run in turn (reversed every other round) after one warm-up call."""
    for function in functions.values():
        function()
    times = {name: [] for name in functions}
    names = list(functions)
    for round_number in range(repeats):
        for name in names if round_number % 2 == 0 else names[::-1]:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            functions[name]()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(1000 * (time.perf_counter() - started))
    return {name: median(values) for name, values in times.items()}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--archs", nargs="+", default=list(ARCHITECTURES))
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each variant (default 7)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--smoke", action="store_true", help="one tiny round: does it run")
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(archs=["squeezenet1_1"], repeats=1, batch_size=2, image_size=32)
    return args


if __name__ == "__main__":
    run(main)
