"""ONNX and TorchScript files of a saved model, each checked against PyTorch on real images.

Both files hold the same graph: images as the data package decodes them
(float32, (N, 3, S, S), in [0, 1]) in; the model's normalisation, the network,
and softmax of the logits divided by the fitted temperature inside; two outputs,
``probabilities`` and the raw ``logits``. The batch axis is dynamic. A file whose
probabilities differ from PyTorch's by more than ``TOLERANCE`` is not written.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spheroid_hpo.atomic_write import replacing
from spheroid_hpo.errors import InputError
from spheroid_hpo.training.onnx_model import INPUT_NAME, METADATA_KEY, OUTPUT_NAMES, info_to_json
from spheroid_hpo.training.saved_model import ModelInfo

TOLERANCE = 1e-4  # max abs probability difference an export may have from PyTorch
ONNX_OPSET = 18
TORCHSCRIPT_INFO_FILE = "spheroid_hpo.json"  # the ModelInfo, in the TorchScript archive's extra files


class ExportCheckError(InputError):
    """An exported file disagrees with PyTorch; it was not written."""


class Deployable(nn.Module):
    """Images in [0, 1] -> (calibrated probabilities, logits): what the ONNX and TorchScript files compute."""

    def __init__(self, network: nn.Module, info: ModelInfo):
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(info.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(info.std, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("temperature", torch.tensor(float(info.temperature), dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network((image - self.mean) / self.std)
        return torch.softmax(logits / self.temperature, dim=1), logits


def export_onnx(network: nn.Module, info: ModelInfo, out: Path, *, check_images: torch.Tensor) -> dict:
    """Write the ONNX file ``out`` (opset 18, dynamic batch) and check it with onnxruntime."""
    import onnx
    import onnxruntime as ort

    module = Deployable(network, info).eval()
    sample = check_images[:2].float().contiguous()

    def write(partial: Path) -> Callable[[torch.Tensor], np.ndarray]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (sample,), str(partial), dynamo=True, opset_version=ONNX_OPSET, verbose=False,
                input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}}, external_data=False,
            )
        model = onnx.load(str(partial))
        onnx.helper.set_model_props(model, {METADATA_KEY: info_to_json(info)})
        model.doc_string = f"spheroid-hpo {info.architecture}: images in [0, 1] -> probabilities, logits"
        onnx.checker.check_model(model)
        onnx.save(model, str(partial))
        session = ort.InferenceSession(str(partial), providers=["CPUExecutionProvider"])
        return lambda images: session.run(["probabilities"], {INPUT_NAME: images.numpy()})[0]

    return _write_checked(module, out, write, check_images=check_images, kind="ONNX (onnxruntime)")


def export_torchscript(network: nn.Module, info: ModelInfo, out: Path, *, check_images: torch.Tensor) -> dict:
    """Write a traced TorchScript file ``out`` (ModelInfo in its extra files) and check it after loading."""
    module = Deployable(network, info).eval()

    def write(partial: Path) -> Callable[[torch.Tensor], np.ndarray]:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # trace is marked deprecated; Java and C++ consumers still need it
            traced = torch.jit.trace(module, check_images[:2].float().contiguous())
            torch.jit.save(traced, str(partial), _extra_files={TORCHSCRIPT_INFO_FILE: info_to_json(info)})
        loaded = torch.jit.load(str(partial), map_location="cpu")
        return lambda images: loaded(images)[0].detach().numpy()

    return _write_checked(module, out, write, check_images=check_images, kind="TorchScript")


def _write_checked(module: nn.Module, out: Path, write, *, check_images: torch.Tensor, kind: str) -> dict:
    """Write to a partial file, compare with PyTorch on batches of every size used, then move into place."""
    out = Path(out)
    started = time.perf_counter()
    with replacing(out) as partial:
        run = write(partial)
        seconds = time.perf_counter() - started
        difference = max_probability_difference(module, run, check_images)
        if not difference <= TOLERANCE:
            raise ExportCheckError(
                f"the {kind} export of {out.name} differs from PyTorch by {difference:.2e} in probability on "
                f"{len(check_images)} test images (tolerance {TOLERANCE:g}); nothing was written"
            )
    return {"path": str(out), "seconds": round(seconds, 2), "max_abs_probability_difference": difference,
            "check_images": len(check_images)}


@torch.no_grad()
def max_probability_difference(module: nn.Module, run, images: torch.Tensor) -> float:
    """Largest |p_export - p_pytorch| over ``images``, run as one batch and as batches of one."""
    images = images.float().contiguous()
    expected = module(images)[0].numpy()
    whole = np.asarray(run(images))
    single = np.concatenate([np.asarray(run(images[i:i + 1])) for i in range(min(len(images), 4))])
    return float(max(np.abs(whole - expected).max(), np.abs(single - expected[:len(single)]).max()))
