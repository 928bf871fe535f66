"""A bioimage.io model package (model description 0.5), checked by ``bioimageio.core`` offline.

The package holds the network three times: a PyTorch state dict whose
architecture is the ``torchvision.models`` builder with ``num_classes`` (the
head rebuilt, as ``spheroid_hpo.training.models`` does), plus TorchScript and ONNX
conversions of it. All three take normalised images and return logits; the
description carries the rest so that any bioimage.io tool applies it:

- input ``image``: float32 (batch, channel, y, x) in [0, 1] at the model's size,
  preprocessed with fixed per-channel mean and std (the model's own);
- output ``probabilities``: one channel per class name, post-processed by
  ``scale_linear`` (gain 1 / temperature) and ``softmax`` over channels.

Test input and output tensors come from real images of the run's test split,
the cover shows them, and the README gives the training configuration and the
test scores. ``bioimageio.core.test_model`` runs before the zip is moved into
place, with ``BIOIMAGEIO_PERFORM_IO_CHECKS=0`` so nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spheroid_hpo.atomic_write import replacing
from spheroid_hpo.results.export._formats import ONNX_OPSET, ExportCheckError
from spheroid_hpo.results.export._source import ModelSource
from spheroid_hpo.training import inference
from spheroid_hpo.training.metrics import classification_metrics

# The paper this project follows has no DOI; its first author's ORCID record stands in as its link.
PAPER = ("D. França, A. G. Santiago, C. C. Santos, J. K. M. B. Daguano, A. C. D. Rodas: Estudo Comparativo entre "
         "MobileNet V3 Large e SqueezeNet para Classificação de Células NIH-3T3 em Esferóides (UFABC / CTI Renato "
         "Archer)", "https://orcid.org/0000-0002-0234-5040")
EARLIER = ("A. G. Santiago, C. C. Santos, M. M. G. Macedo, J. K. M. B. Daguano, A. C. D. Rodas (2021): Non-destructive "
           "fibroblast NIH-3T3 spheroid classification using convolutional neural network, Proc. SPIE 11600",
           "10.1117/12.2580916")
_TORCHVISION_KWARGS = {"googlenet": {"aux_logits": False, "init_weights": False}}


def export_bioimageio(network: nn.Module, source: ModelSource, out: Path, *, scratch: Path) -> dict:
    """Build, test offline and write the package ``out`` (a .zip); nothing is written if the test fails."""
    os.environ["BIOIMAGEIO_PERFORM_IO_CHECKS"] = "0"  # read when bioimageio.spec is first imported
    from bioimageio.core import test_model
    from bioimageio.spec import save_bioimageio_package

    started = time.perf_counter()
    folder = scratch / "package"
    folder.mkdir()
    descr = _describe(network, source, folder)
    summary = test_model(descr, devices=["cpu"])
    if summary.status != "passed":
        failed = [f"{d.name}: {d.errors[0].msg}" for d in summary.details if d.status == "failed" and d.errors]
        raise ExportCheckError(
            f"bioimageio.core's test_model failed the package ({'; '.join(failed)[:400] or summary.status}); "
            f"nothing was written"
        )
    with replacing(Path(out), suffix=".zip") as partial:
        save_bioimageio_package(descr, output_path=partial)
    return {"path": str(out), "seconds": round(time.perf_counter() - started, 2), "test_model": summary.status,
            "weights": "pytorch_state_dict, torchscript, onnx"}


def _describe(network: nn.Module, source: ModelSource, folder: Path):
    import bioimageio.spec.model.v0_5 as v
    from bioimageio.spec.generic.v0_3 import Author, CiteEntry, Doi, FileDescr, HttpUrl, LicenseId

    info = source.info
    size = info.image_size
    images = source.test.images.float().cpu().contiguous()
    probabilities = _calibrated_probabilities(network, info, images)  # the whole test split, for the README
    np.save(folder / "test_input.npy", images[:1].numpy())
    np.save(folder / "test_output.npy", probabilities[:1].numpy())

    weights = folder / "weights.pt"
    torch.save(network.state_dict(), weights)
    normalised = (images[:2] - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(info.std).view(1, 3, 1, 1)
    torchscript = folder / "weights.torchscript.pt"
    with torch.no_grad():
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(network, normalised), str(torchscript))
            onnx_file = folder / "weights.onnx"
            torch.onnx.export(network, (normalised,), str(onnx_file), dynamo=True, opset_version=ONNX_OPSET,
                              verbose=False, input_names=["input"], output_names=["output"], external_data=False,
                              dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
    cover = _cover(source, images[:8], probabilities[:8], folder / "cover.png")
    readme = folder / "README.md"
    readme.write_text(_readme(source, probabilities.argmax(1)))

    kwargs = {"num_classes": len(info.class_names), **_TORCHVISION_KWARGS.get(info.architecture, {})}
    if getattr(network, "transform_input", False):
        kwargs["transform_input"] = True
    channel = v.AxisId("channel")
    inputs = [v.InputTensorDescr(
        id=v.TensorId("image"),
        description=f"RGB image in [0, 1] resized to {size} px (8-bit / 255, other depths stretched by own range)",
        axes=[v.BatchAxis(), v.ChannelAxis(channel_names=[v.Identifier(c) for c in ("r", "g", "b")]),
              v.SpaceInputAxis(id=v.AxisId("y"), size=size), v.SpaceInputAxis(id=v.AxisId("x"), size=size)],
        test_tensor=FileDescr(source=folder / "test_input.npy"),
        data=v.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        preprocessing=[v.FixedZeroMeanUnitVarianceDescr(kwargs=v.FixedZeroMeanUnitVarianceAlongAxisKwargs(
            mean=list(info.mean), std=list(info.std), axis=channel))],
    )]
    outputs = [v.OutputTensorDescr(
        id=v.TensorId("probabilities"),
        description=f"calibrated class probabilities (temperature {info.temperature:.4g} fitted on validation)",
        axes=[v.BatchAxis(), v.ChannelAxis(channel_names=[v.Identifier(_identifier(c)) for c in info.class_names])],
        test_tensor=FileDescr(source=folder / "test_output.npy"),
        data=v.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        postprocessing=[
            v.ScaleLinearDescr(kwargs=v.ScaleLinearKwargs(gain=1.0 / info.temperature)),
            v.SoftmaxDescr(kwargs=v.SoftmaxKwargs(axis=channel)),
        ],
    )]
    pytorch_version = v.Version(torch.__version__.split("+")[0])
    return v.ModelDescr(
        name=f"spheroid-hpo {info.architecture} spheroid classifier",
        description=f"Classifies {size} px microscopy patches of cell spheroids into {', '.join(info.class_names)}; "
                    f"trained and tuned with spheroid-hpo ({source.description})."[:1024],
        authors=[Author(name="spheroid-hpo")],
        cite=[CiteEntry(text=PAPER[0], url=HttpUrl(PAPER[1])), CiteEntry(text=EARLIER[0], doi=Doi(EARLIER[1]))],
        license=LicenseId("MIT"),
        documentation=FileDescr(source=readme),
        covers=[FileDescr(source=cover)],
        tags=["classification", "spheroids", "microscopy", "2d", "pytorch", info.architecture],
        inputs=inputs,
        outputs=outputs,
        weights=v.WeightsDescr(
            pytorch_state_dict=v.PytorchStateDictWeightsDescr(
                source=weights, pytorch_version=pytorch_version,
                architecture=v.ArchitectureFromLibraryDescr(
                    callable=v.Identifier(info.architecture), import_from="torchvision.models", kwargs=kwargs),
            ),
            torchscript=v.TorchscriptWeightsDescr(
                source=torchscript, pytorch_version=pytorch_version, parent="pytorch_state_dict"),
            onnx=v.OnnxWeightsDescr(source=onnx_file, opset_version=ONNX_OPSET, parent="pytorch_state_dict"),
        ),
    )


def _calibrated_probabilities(network: nn.Module, info, images: torch.Tensor) -> torch.Tensor:
    """What the package must reproduce: PyTorch's calibrated probabilities (the test output tensor)."""
    logits = inference.predict_logits(network, images, mean=info.mean, std=info.std).cpu()
    return torch.softmax(logits / info.temperature, dim=1)


def _identifier(name: str) -> str:
    """A channel name bioimage.io accepts (a Python identifier): ``0_background`` -> ``class_0_background``."""
    text = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return text if text.isidentifier() else f"class_{text}"


def _cover(source: ModelSource, images: torch.Tensor, probabilities: torch.Tensor, path: Path) -> Path:
    """Up to 8 test images in a 2:1 grid, each titled with its true and predicted class."""
    from matplotlib.figure import Figure

    names = source.info.class_names
    fig = Figure(figsize=(8, 4), layout="constrained")
    axes = fig.subplots(2, 4).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i].permute(1, 2, 0).clamp(0, 1).numpy())
            p = probabilities[i]
            ax.set_title(f"true {names[int(source.test.labels[i])]}\n{names[int(p.argmax())]} {float(p.max()):.2f}",
                         fontsize=7)
    fig.savefig(path, dpi=100)
    return path


def _readme(source: ModelSource, predicted: torch.Tensor) -> str:
    info = source.info
    config = {k: v for k, v in source.config.items() if k != "calibration"}
    calibration = source.config.get("calibration") or {}
    metrics = classification_metrics(source.test.labels.cpu().numpy(), predicted.numpy(),
                                     num_classes=len(info.class_names))
    lines = [
        f"# spheroid-hpo {info.architecture}", "",
        f"A {info.architecture} (torchvision, head rebuilt for {len(info.class_names)} classes) that classifies "
        f"microscopy patches of cell spheroids. Exported by `spheroid-hpo export` from {source.description}.", "",
        "## Input and output", "",
        f"- input `image`: RGB float32 in [0, 1], {info.image_size} x {info.image_size} px; normalised with "
        f"mean {list(info.mean)} and std {list(info.std)} (preprocessing in the description)",
        f"- output `probabilities`: one channel per class ({', '.join(info.class_names)}); softmax of the logits "
        f"divided by the temperature {info.temperature:.4g}, fitted on the validation split by minimising NLL", "",
        "## Training configuration", "", "```json", json.dumps(config, indent=2, default=str), "```", "",
        "## Test scores", "",
        f"On the {len(predicted)} images of the run's test split, which training and tuning never saw "
        f"(the package's test tensors come from them): accuracy {metrics.accuracy:.3f}, macro-F1 "
        f"{metrics.macro_f1:.3f}; per class F1 "
        + ", ".join(f"{name} {f1:.3f}" for name, f1 in zip(info.class_names, metrics.f1)) + ".", "",
    ]
    if calibration:
        lines += ["Calibration (15-bin expected calibration error, before -> after the temperature):", ""]
        for split in ("val", "test"):
            if split in calibration:
                s = calibration[split]
                lines.append(f"- {split}: ECE {s['ece_before']:.3f} -> {s['ece_after']:.3f}, "
                             f"NLL {s['nll_before']:.3f} -> {s['nll_after']:.3f}")
        lines.append("")
    lines += ["## Citation", "", f"- {PAPER[0]}", f"- {EARLIER[0]}, https://doi.org/{EARLIER[1]}", ""]
    return "\n".join(lines)
