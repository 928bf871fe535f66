"""Building a registered architecture (``training.architectures``) with a head for the spheroid classes.

The net is built by torchvision with its ImageNet (1000-class) head; weights are loaded
into that shape and only then is the last layer replaced with one that has
``num_classes`` outputs (the paper's Table I, listed in ``training.architectures``).

``weights="imagenet"`` reads torchvision's checkpoint file from the torch hub
cache and never downloads it (the README promises that nothing is downloaded, and a
worker on a cluster node should not reach out); when it is absent the error says which
file to fetch and where to put it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models import WeightsEnum

from spheroid_hpo.errors import InputError
from spheroid_hpo.training.architectures import (  # noqa: F401 (re-exported)
    Architecture,
    applicable_params,
    architecture,
    architecture_names,
    check_image_size,
)
from spheroid_hpo.training.settings import TRAINING_DEFAULTS

__all__ = [
    "applicable_params", "architecture_names", "check_image_size", "check_weights", "count_parameters", "create_model",
]

_WEIGHTS_HELP = "pass weights='none', weights='imagenet', or a path to a state dict file saved with torch.save"
_HEAD_INITS = {
    "normal": partial(nn.init.normal_, mean=0.0, std=0.01),
    "trunc_normal": partial(nn.init.trunc_normal_, mean=0.0, std=0.01, a=-2.0, b=2.0),
}

# Prefixes that wrappers add to every key: torch.compile and (Distributed)DataParallel.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def _imagenet_weights(arch: Architecture) -> WeightsEnum:
    enum, member = arch.imagenet_weights.split(".")
    return getattr(getattr(tvm, enum), member)


def _imagenet_checkpoint_path(name: str) -> Path:
    """Where ``create_model(name, weights="imagenet")`` looks for torchvision's checkpoint."""
    return Path(torch.hub.get_dir()) / "checkpoints" / _url_file_name(_imagenet_weights(architecture(name)).url)


def create_model(
    name: str,
    *,
    num_classes: int,
    weights: str = TRAINING_DEFAULTS.weights,
    bn_momentum: float | None = None,
) -> nn.Module:
    """Build architecture ``name`` with a ``num_classes``-way head.

    ``weights``: "none" (random init), "imagenet" (torchvision's ImageNet
    checkpoint from ``torch.hub.get_dir()/checkpoints``, never downloaded), or a
    path to a state dict. The file may be torchvision-shaped or saved from a
    model this function built; its head is loaded only when its shape matches
    the new head, otherwise the new head keeps its fresh init.
    ``bn_momentum``: when given, the momentum of every BatchNorm layer.
    GoogLeNet built with weights gets ``transform_input=True``, as torchvision
    does for its pretrained GoogLeNet.
    """
    arch = architecture(name)
    num_classes = _check_num_classes(num_classes)
    if bn_momentum is not None:
        bn_momentum = _check_bn_momentum(bn_momentum)

    weights_path = _weights_path(name, arch, weights)  # before building: fail fast on a bad path

    model = getattr(tvm, arch.builder)(**arch.builder_kwargs)
    head_state: dict[str, torch.Tensor] = {}
    if weights_path is not None:
        state = _state_dict_from_file(weights_path)
        state = {k: v for k, v in state.items() if not k.startswith(arch.dropped_key_prefixes)}
        head_state = _load_backbone(model, state, name=name, head=arch.head, source=weights_path)
    _replace_head(model, arch, num_classes)
    if head_state:
        _load_head_if_shapes_match(model, arch.head, head_state)
    if weights_path is not None and isinstance(model, tvm.GoogLeNet):
        # Torchvision's GoogLeNet weights were ported from a model that expects
        # inputs in [-1, 1]; transform_input maps ImageNet-normalised input there.
        model.transform_input = True
    if bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                module.momentum = bn_momentum
    return model


def check_weights(weights: str, *, architectures: Iterable[str]) -> None:
    """Raise InputError now when ``weights`` cannot start one of ``architectures``.

    A missing, junk or mismatched file would otherwise fail every trial of a study, one
    after another, each only in a worker's log. Random init ("none") needs no check; any
    other choice is loaded into each net once, as a trial would load it.
    """
    for name in architectures:
        if _weights_path(name, architecture(name), weights) is not None:
            create_model(name, num_classes=2, weights=weights)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters in ``model`` (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise InputError(f"num_classes={num_classes!r} is invalid; pass an integer >= 2 (the number of class folders)")
    return num_classes


def _check_bn_momentum(bn_momentum: float) -> float:
    if isinstance(bn_momentum, bool) or not isinstance(bn_momentum, (int, float)) or not 0.0 < bn_momentum <= 1.0:
        raise InputError(
            f"bn_momentum={bn_momentum!r} is invalid; pass a number in (0, 1] (PyTorch's default is 0.1) or None"
        )
    return float(bn_momentum)


def _url_file_name(url: str) -> str:
    # Same rule torch.hub.load_state_dict_from_url uses to name the cached file.
    return os.path.basename(urlparse(url).path)


def _weights_path(name: str, arch: Architecture, weights: str | os.PathLike[str]) -> Path | None:
    """The file that ``weights`` names, or None for random init."""
    keyword = weights.strip().lower() if isinstance(weights, str) else None
    if keyword == "none":
        return None
    if keyword == "imagenet":
        url = _imagenet_weights(arch).url
        path = _imagenet_checkpoint_path(name)
        if not path.is_file():
            raise InputError(
                f"ImageNet weights for {name} not found: {path.name} is not in {path.parent} (nothing is "
                f"downloaded); download {url} into that folder (or set TORCH_HOME to a cache that holds it), "
                "or pass weights='none'"
            )
    elif isinstance(weights, (str, os.PathLike)):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise InputError(f"weights file {str(weights)!r} does not exist; {_WEIGHTS_HELP}")
    else:
        raise InputError(f"weights={weights!r} is invalid; {_WEIGHTS_HELP}")
    return path


def _state_dict_from_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise InputError(
            f"cannot read weights file {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; "
            "the file may be truncated or not saved with torch.save — download or save it again"
        ) from exc
    if isinstance(obj, Mapping) and not _is_tensor_mapping(obj):
        # Training checkpoints often nest the weights next to optimiser state.
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping) and _is_tensor_mapping(obj[key]):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not _is_tensor_mapping(obj):
        raise InputError(
            f"weights file {path} does not hold a state dict (a mapping of parameter names to tensors); "
            "save one with torch.save(model.state_dict(), path)"
        )
    state = dict(obj)
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _is_tensor_mapping(obj: Mapping) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _load_backbone(
    model: nn.Module, state: dict[str, torch.Tensor], *, name: str, head: str, source: Path
) -> dict[str, torch.Tensor]:
    """Load every non-head tensor of ``state`` into ``model``; return the head tensors."""
    head_prefix = head + "."
    head_state = {k: v for k, v in state.items() if k.startswith(head_prefix)}
    backbone = {k: v for k, v in state.items() if not k.startswith(head_prefix)}

    own = model.state_dict()
    wrong_shape = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in backbone.items()
        if k in own and own[k].shape != v.shape
    ]
    if wrong_shape:
        raise InputError(
            f"weights file {source} does not fit {name}: {len(wrong_shape)} tensors have the wrong shape "
            f"(file vs model), e.g. {'; '.join(wrong_shape[:3])}; pass weights saved from a {name} model"
        )
    # strict=False because BatchNorm fills in num_batches_tracked for old checkpoints
    # itself; what it cannot fill in is reported by the returned keys.
    result = model.load_state_dict(backbone, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(head_prefix)]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} keys missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise InputError(
            f"weights file {source} does not fit {name}: {' and '.join(parts)}; pass weights saved from a {name} model"
        )
    return head_state


def _replace_head(model: nn.Module, arch: Architecture, num_classes: int) -> None:
    old = model.get_submodule(arch.head)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes)
    elif isinstance(old, nn.Conv2d):
        new = nn.Conv2d(old.in_channels, num_classes, kernel_size=old.kernel_size)
    else:  # only reachable through a registry mistake
        raise TypeError(f"head {arch.head} is a {type(old).__name__}, expected Linear or Conv2d")
    if arch.head_init is not None:
        _HEAD_INITS[arch.head_init](new.weight)
        nn.init.zeros_(new.bias)
    model.set_submodule(arch.head, new)
    if hasattr(model, "num_classes"):  # SqueezeNet records it
        model.num_classes = num_classes


def _load_head_if_shapes_match(model: nn.Module, head: str, head_state: dict[str, torch.Tensor]) -> None:
    head_prefix = head + "."
    own = {k: v for k, v in model.state_dict().items() if k in head_state or k.startswith(head_prefix)}
    if own.keys() == head_state.keys() and all(own[k].shape == v.shape for k, v in head_state.items()):
        model.load_state_dict(head_state, strict=False)
