"""The architecture registry: which nets exist, what each needs, and which tunables change it.

Lookup kept apart from construction (as in timm's ``_registry``/``_factory``): this
module is torch-free, so a study file can be checked without loading PyTorch;
``training.models`` builds a net from its entry here.

Every net is a torchvision model built with its ImageNet (1000-class) head, whose
last layer is then replaced for the spheroid classes (the paper's Table I):

- MobileNet V3 Large: classifier = Linear(960, 1280), Hardswish, Dropout(0.2), Linear(1280, N)
- SqueezeNet 1.0 / 1.1: classifier = Dropout(0.5), Conv2d(512, N, 1), ReLU, AdaptiveAvgPool2d((1, 1))
- AlexNet, GoogLeNet, ResNet-18, VGG-16-BN: the last Linear -> N
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from spheroid_hpo.errors import InputError
from spheroid_hpo.training.hyperparams import TUNABLE_PARAMS

__all__ = ["Architecture", "applicable_params", "architecture", "architecture_names", "check_image_size"]

# Tunables that change only nets with BatchNorm; every other tunable means something for every
# architecture, so a new hyperparameter needs no entry here unless it is one of these.
BN_TUNABLES = ("bn_momentum",)
COMMON_TUNABLES = tuple(name for name in TUNABLE_PARAMS if name not in BN_TUNABLES)


@dataclass(frozen=True)
class Architecture:
    """One registered net: how torchvision builds it, where its head is, and what applies to it."""

    builder: str  # torchvision.models function that builds it with the 1000-class head, random weights
    imagenet_weights: str  # the torchvision weights enum member, "Enum.MEMBER"
    head: str  # dotted path of the layer replaced for ``num_classes``
    # How the new head's weight is initialised, as torchvision initialises that layer ("normal" or
    # "trunc_normal", std 0.01; None keeps PyTorch's default init).
    head_init: str | None = None
    builder_kwargs: dict = field(default_factory=dict)
    # Checkpoint keys that exist in torchvision's file but not in our model.
    dropped_key_prefixes: tuple[str, ...] = ()
    # The search-space keys that change this net: a parameter that changes nothing (BatchNorm
    # momentum of a net without BatchNorm) would only add noise to the search and its importances.
    tunables: tuple[str, ...] = COMMON_TUNABLES + BN_TUNABLES
    # Smallest square input whose feature maps do not shrink to nothing (measured, rounded up).
    min_image_size: int = 16


_REGISTRY: dict[str, Architecture] = {
    "mobilenet_v3_large": Architecture(
        builder="mobilenet_v3_large", imagenet_weights="MobileNet_V3_Large_Weights.IMAGENET1K_V1",
        head="classifier.3", head_init="normal",
    ),
    "squeezenet1_0": Architecture(
        builder="squeezenet1_0", imagenet_weights="SqueezeNet1_0_Weights.IMAGENET1K_V1",
        head="classifier.1", head_init="normal", tunables=COMMON_TUNABLES,  # no BatchNorm
        min_image_size=32,
    ),
    "squeezenet1_1": Architecture(
        builder="squeezenet1_1", imagenet_weights="SqueezeNet1_1_Weights.IMAGENET1K_V1",
        head="classifier.1", head_init="normal", tunables=COMMON_TUNABLES,  # no BatchNorm
        min_image_size=32,
    ),
    "alexnet": Architecture(
        builder="alexnet", imagenet_weights="AlexNet_Weights.IMAGENET1K_V1",
        head="classifier.6", tunables=COMMON_TUNABLES,  # no BatchNorm
        min_image_size=64,
    ),
    "googlenet": Architecture(
        # The auxiliary classifiers only help training from scratch on ImageNet.
        builder="googlenet", builder_kwargs={"aux_logits": False, "init_weights": True},
        imagenet_weights="GoogLeNet_Weights.IMAGENET1K_V1", head="fc", head_init="trunc_normal",
        dropped_key_prefixes=("aux1.", "aux2."),
    ),
    "resnet18": Architecture(
        builder="resnet18", imagenet_weights="ResNet18_Weights.IMAGENET1K_V1", head="fc",
    ),
    "vgg16_bn": Architecture(
        builder="vgg16_bn", imagenet_weights="VGG16_BN_Weights.IMAGENET1K_V1", head="classifier.6",
        head_init="normal", min_image_size=32,
    ),
}


def architecture_names() -> tuple[str, ...]:
    """Names accepted by ``training.models.create_model``, in registry order."""
    return tuple(_REGISTRY)


def architecture(name: str) -> Architecture:
    """The registry entry of ``name``; an InputError listing the valid names (and the closest) otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        valid = ", ".join(_REGISTRY)
        close = difflib.get_close_matches(str(name), _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"unknown architecture {name!r}{hint}; choose one of: {valid}") from None


def applicable_params(name: str) -> tuple[str, ...]:
    """The search-space keys that mean something for architecture ``name``."""
    return architecture(name).tunables


def check_image_size(name: str, image_size: int) -> int:
    """``image_size`` if architecture ``name`` can classify images that small, else an InputError."""
    minimum = architecture(name).min_image_size
    if image_size < minimum:
        raise InputError(f"{name} needs images of at least {minimum} px, but got {image_size=}; raise image_size")
    return image_size
