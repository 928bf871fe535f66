"""Model registry, classifier heads (paper's Table I), weight loading and BatchNorm momentum."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from spheroid_hpo.errors import InputError
from spheroid_hpo.training.models import architecture_names, count_parameters, create_model

ALL = (
    "mobilenet_v3_large",
    "squeezenet1_0",
    "squeezenet1_1",
    "alexnet",
    "googlenet",
    "resnet18",
    "vgg16_bn",
)
N = 4  # the paper's four spheroid classes


@functools.cache
def _model(name: str) -> nn.Module:
    # VGG16-BN alone takes ~2 s to initialise; build each architecture once per session.
    torch.manual_seed(0)
    return create_model(name, num_classes=N)


@pytest.fixture
def hub_dir(tmp_path: Path):
    """An empty torch hub cache, so no test sees (or writes) the user's real checkpoints."""
    previous = torch.hub.get_dir()
    hub = tmp_path / "hub"
    torch.hub.set_dir(str(hub))
    yield hub
    torch.hub.set_dir(previous)


def _save_imagenet_checkpoint(hub: Path, file_name: str, model: nn.Module) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    (hub / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(state, hub / "checkpoints" / file_name)
    return state


def test_registry_names_are_the_papers_and_baselines():
    assert architecture_names() == ALL


def test_unknown_architecture_error_lists_every_valid_name():
    with pytest.raises(InputError) as info:
        create_model("mobilenet_v3_small", num_classes=N)
    message = str(info.value)
    assert "'mobilenet_v3_small'" in message
    for name in ALL:
        assert name in message
    assert "did you mean 'mobilenet_v3_large'" in message


def test_mobilenet_v3_large_head_matches_table_1():
    classifier = _model("mobilenet_v3_large").classifier
    assert [type(layer) for layer in classifier] == [nn.Linear, nn.Hardswish, nn.Dropout, nn.Linear]
    first, _, dropout, last = classifier
    assert (first.in_features, first.out_features) == (960, 1280)
    assert dropout.p == 0.2
    assert (last.in_features, last.out_features) == (1280, N)


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_1"])
def test_squeezenet_head_matches_table_1(name: str):
    model = _model(name)
    classifier = model.classifier
    assert [type(layer) for layer in classifier] == [nn.Dropout, nn.Conv2d, nn.ReLU, nn.AdaptiveAvgPool2d]
    dropout, conv, _, pool = classifier
    assert dropout.p == 0.5
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (512, N, (1, 1))
    assert pool.output_size in ((1, 1), 1)
    assert model.num_classes == N
    # torchvision initialises the final conv with normal(0, 0.01) and zero bias.
    assert 0.008 < conv.weight.std().item() < 0.012
    assert torch.count_nonzero(conv.bias) == 0


@pytest.mark.parametrize(
    ("name", "head", "in_features"),
    [
        ("alexnet", "classifier.6", 4096),
        ("googlenet", "fc", 1024),
        ("resnet18", "fc", 512),
        ("vgg16_bn", "classifier.6", 4096),
    ],
)
def test_last_linear_has_one_output_per_class(name: str, head: str, in_features: int):
    layer = _model(name).get_submodule(head)
    assert isinstance(layer, nn.Linear)
    assert (layer.in_features, layer.out_features) == (in_features, N)


@pytest.mark.parametrize("name", ALL)
def test_forward_gives_one_logit_per_class(name: str):
    model = _model(name).train()  # training mode: GoogLeNet must return a plain tensor, not aux outputs
    # 64 px is the smallest square size AlexNet's pooling accepts; every other model takes it too.
    batch = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model(batch)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, N)


def test_googlenet_has_no_aux_classifiers_and_untransformed_input_without_weights():
    model = _model("googlenet")
    assert model.aux_logits is False and model.aux1 is None and model.aux2 is None
    assert model.transform_input is False


def test_count_parameters_counts_frozen_parameters_too():
    model = create_model("squeezenet1_1", num_classes=N)
    # 1000-class SqueezeNet 1.1 has 1,235,496 parameters; the head shrinks 512*1000+1000 -> 512*4+4.
    assert count_parameters(model) == 1_235_496 - 513_000 + 2_052
    for p in model.features.parameters():
        p.requires_grad_(False)
    assert count_parameters(model) == 1_235_496 - 513_000 + 2_052


def test_count_parameters_of_mobilenet_v3_large():
    # torchvision's 5,483,032 for 1000 classes, with the last Linear resized to 1280 -> 4.
    assert count_parameters(_model("mobilenet_v3_large")) == 5_483_032 - 1_281_000 + 5_124


def test_bn_momentum_is_set_on_every_batchnorm_layer():
    model = create_model("resnet18", num_classes=N, bn_momentum=0.01)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 20
    assert {m.momentum for m in norms} == {0.01}
    assert {m.momentum for m in _model("resnet18").modules() if isinstance(m, nn.BatchNorm2d)} == {0.1}


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"num_classes": 1}, "num_classes=1"),
        ({"num_classes": 4.0}, "num_classes=4.0"),
        ({"num_classes": N, "bn_momentum": 0.0}, "bn_momentum=0.0"),
        ({"num_classes": N, "bn_momentum": 1.5}, "bn_momentum=1.5"),
        ({"num_classes": N, "weights": 7}, "weights=7"),
    ],
)
def test_bad_options_raise_input_error_naming_the_value(kwargs: dict, fragment: str):
    with pytest.raises(InputError, match=fragment):
        create_model("squeezenet1_1", **kwargs)


def test_missing_imagenet_checkpoint_names_file_folder_and_url_and_is_never_downloaded(hub_dir: Path, monkeypatch):
    tried = []

    def download(url, dst, **kwargs):  # would stand in for download.pytorch.org
        tried.append(url)
        torch.save(tvm.mobilenet_v3_large().state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", download)
    with pytest.raises(InputError) as info:
        create_model("mobilenet_v3_large", num_classes=N, weights="imagenet")
    assert tried == []  # the README: nothing is downloaded
    message = str(info.value)
    assert "nothing is downloaded" in message
    assert "mobilenet_v3_large-8738ca79.pth" in message
    assert str(hub_dir / "checkpoints") in message
    assert "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth" in message
    assert not (hub_dir / "checkpoints").exists()


def test_imagenet_checkpoint_loads_backbone_and_replaces_head(hub_dir: Path):
    torch.manual_seed(1)
    saved = _save_imagenet_checkpoint(hub_dir, "mobilenet_v3_large-8738ca79.pth", tvm.mobilenet_v3_large())
    torch.manual_seed(2)
    model = create_model("mobilenet_v3_large", num_classes=N, weights="imagenet")
    state = model.state_dict()
    assert torch.equal(state["features.0.0.weight"], saved["features.0.0.weight"])
    assert torch.equal(state["features.16.1.running_var"], saved["features.16.1.running_var"])
    # The first head Linear (960 -> 1280) keeps its pretrained weights; only the last is new.
    assert torch.equal(state["classifier.0.weight"], saved["classifier.0.weight"])
    assert model.classifier[3].out_features == N
    assert state["classifier.3.weight"].shape == (N, 1280)


def test_imagenet_squeezenet_checkpoint_loads(hub_dir: Path):
    saved = _save_imagenet_checkpoint(hub_dir, "squeezenet1_1-b8a52dc0.pth", tvm.squeezenet1_1())
    model = create_model("squeezenet1_1", num_classes=N, weights="imagenet")
    assert torch.equal(model.state_dict()["features.0.weight"], saved["features.0.weight"])
    assert model.classifier[1].weight.shape == (N, 512, 1, 1)


def test_imagenet_googlenet_checkpoint_drops_aux_keys_and_transforms_input(hub_dir: Path):
    reference = tvm.googlenet(aux_logits=True, init_weights=False)  # torchvision's file holds aux heads
    state = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert any(k.startswith("aux1.") for k in state)
    (hub_dir / "checkpoints").mkdir(parents=True)
    # Old checkpoints lack num_batches_tracked; BatchNorm fills it in.
    torch.save(state, hub_dir / "checkpoints" / "googlenet-1378be20.pth")
    model = create_model("googlenet", num_classes=N, weights="imagenet")
    assert torch.equal(model.state_dict()["conv1.conv.weight"], state["conv1.conv.weight"])
    assert model.aux1 is None and model.transform_input is True
    assert model.fc.out_features == N


def test_state_dict_of_our_model_reloads_exactly(tmp_path: Path):
    torch.manual_seed(3)
    trained = create_model("squeezenet1_1", num_classes=N)
    path = tmp_path / "model.pt"
    torch.save(trained.state_dict(), path)
    torch.manual_seed(4)
    reloaded = create_model("squeezenet1_1", num_classes=N, weights=str(path))
    for key, value in trained.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


def test_head_of_other_class_count_is_dropped(tmp_path: Path):
    source = create_model("squeezenet1_1", num_classes=3)
    path = tmp_path / "three_classes.pt"
    torch.save(source.state_dict(), path)
    model = create_model("squeezenet1_1", num_classes=N, weights=str(path))
    key = "features.3.squeeze.weight"
    assert torch.equal(model.state_dict()[key], source.state_dict()[key])
    assert model.classifier[1].weight.shape == (N, 512, 1, 1)


def test_compiled_and_checkpoint_wrapped_state_dicts_load(tmp_path: Path):
    source = create_model("squeezenet1_1", num_classes=N)
    path = tmp_path / "wrapped.pt"
    # torch.compile prefixes keys with _orig_mod.; training scripts nest them under "state_dict".
    torch.save({"state_dict": {f"_orig_mod.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}, path)
    model = create_model("squeezenet1_1", num_classes=N, weights=path)
    assert torch.equal(model.state_dict()["classifier.1.weight"], source.state_dict()["classifier.1.weight"])


def test_weights_of_another_architecture_raise_naming_keys(tmp_path: Path):
    path = tmp_path / "squeeze.pt"
    torch.save(create_model("squeezenet1_1", num_classes=N).state_dict(), path)
    with pytest.raises(InputError) as info:
        create_model("squeezenet1_0", num_classes=N, weights=str(path))
    message = str(info.value)
    assert "wrong shape" in message and "features.0.weight" in message and "squeezenet1_0" in message

    torch.save(_model("googlenet").state_dict(), path)
    with pytest.raises(InputError) as info:
        create_model("squeezenet1_1", num_classes=N, weights=str(path))
    message = str(info.value)
    assert "missing" in message and "unexpected" in message and "conv1.conv.weight" in message


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(None, "does not exist"), (b"not a pickle", "cannot read"), ([1, 2, 3], "does not hold a state dict")],
)
def test_unusable_weights_file_raises(tmp_path: Path, content, fragment: str):
    path = tmp_path / "weights.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(InputError, match=fragment):
        create_model("squeezenet1_1", num_classes=N, weights=str(path))
