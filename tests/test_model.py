import pytest
import torch

from fmnist.core.errors import ConfigError
from fmnist.core.model import ARCH_KEYS, WIDTHS, FashionCNN, build, layers, map_sides, n_params
from fmnist.core.study import preset
from tests.helpers import compose_cfg

MEDIUM = preset("medium")


@pytest.mark.parametrize("preset", ["small", "medium", "large"])
def test_presets_compose_and_build(tmp_path, preset):
    cfg = compose_cfg(tmp_path, [f"model={preset}"])
    assert set(ARCH_KEYS) | {"weight_init", "_target_"} == set(cfg.model)
    from fmnist.training.loop import build_model

    model = build_model(cfg.model)
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    if preset == "medium":  # the study's basic model
        assert model.arch == dict(conv1_channels=12, conv1_kernel=3, conv2_channels=16, conv2_kernel=5, fc1_size=100)


@pytest.mark.parametrize("k1", [3, 5])
@pytest.mark.parametrize("k2", [3, 5])
def test_fc1_input_follows_kernels(k1, k2):
    model = FashionCNN(
        conv1_channels=8, conv1_kernel=k1, conv2_channels=12, conv2_kernel=k2, fc1_size=50, weight_init="normal"
    )
    side = 28 - k1 + 1 - k2 + 1
    assert map_sides(k1, k2)[1] == side
    assert model.fc1.in_features == 12 * side * side
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_medium_has_the_studys_maps_and_params():
    model = build(MEDIUM)
    x = torch.relu(model.conv1(torch.zeros(1, 1, 28, 28)))
    assert x.shape == (1, 12, 26, 26)
    assert model.conv2(x).shape == (1, 16, 22, 22)
    assert n_params(model) == (9 * 12 + 12) + (12 * 25 * 16 + 16) + (22 * 22 * 16 * 100 + 100) + (100 * 10 + 10)


@pytest.mark.parametrize("init", ["xavier_normal", "xavier_uniform", "normal"])
def test_weight_init_and_zero_bias(init):
    torch.manual_seed(0)
    model = build(MEDIUM, weight_init=init)
    assert all(torch.all(layer.bias == 0) for layer in (model.conv1, model.conv2, model.fc1, model.fc2))
    std = model.fc1.weight.std().item()
    expected = 0.01 if init == "normal" else (2 / (7744 + 100)) ** 0.5  # xavier: gain * sqrt(2 / (in + out))
    assert std == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(conv1_kernel=20, conv2_kernel=10), "leave no feature map"),
        (dict(conv1_channels=0), "model.conv1_channels=0 must be a whole number >= 1"),
        (dict(fc1_size=2.5), "model.fc1_size=2.5"),
        (dict(weight_init="kaiming"), "model.weight_init='kaiming' is unknown"),
    ],
)
def test_impossible_models_are_rejected(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        FashionCNN(**{**MEDIUM, "weight_init": "normal", **kwargs})


@pytest.mark.parametrize("arch", [(12, 3, 16, 5, 100), (1, 5, 7, 3, 72), (3, 1, 2, 1, 7)])
def test_the_layer_description_is_the_model(arch):
    """What `layers(arch)` says each layer takes and gives is what the built model's modules do, in order."""
    model = FashionCNN(*arch, weight_init="normal")
    described = layers(model.arch)
    assert (
        [d.name for d in described] == [name for name, _ in model.named_children()] == ["conv1", "conv2", "fc1", "fc2"]
    )
    images = torch.randn(2, 1, 28, 28)
    x = images
    for d in described:
        assert tuple(x.shape[1:]) == d.in_shape or x.flatten(1).shape[1:] == d.in_shape
        x = model.step(d, x)
        assert tuple(x.shape[1:]) == d.out_shape
        assert sum(p.numel() for p in getattr(model, d.name).parameters()) == d.units * (d.fan_in + 1)
    manual = torch.relu(model.fc1(torch.relu(model.conv2(torch.relu(model.conv1(images)))).flatten(1)))
    torch.testing.assert_close(model(images), model.fc2(manual))  # the study's forward pass, written out
    torch.testing.assert_close(x, model(images))
    assert WIDTHS == {d.name: d.width for d in described[:-1]} and described[-1].width is None
