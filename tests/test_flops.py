import pytest

from fmnist.core.flops import counted_macs, layer_counts, totals
from fmnist.core.model import ARCH_KEYS, FashionCNN, n_params


def test_study_formula_for_medium_and_its_pruned_model():
    c1, c2, f1 = 12, 16, 100  # the study's formula, written out
    medium = 26 * 26 * (1 * 3 * 3) * c1 + 2 * c1 * 26 * 26 + 22 * 22 * (c1 * 5 * 5) * c2 + 2 * c2 * 22 * 22
    medium += f1 * (22 * 22 * c2) + 2 * f1 + f1 * 10
    arch = dict(conv1_channels=12, conv1_kernel=3, conv2_channels=16, conv2_kernel=5, fc1_size=100)
    assert totals(arch)["study_flops"] == medium == 3_203_520
    pruned = {**arch, "conv1_channels": 1, "conv2_channels": 7, "fc1_size": 72}
    assert totals(arch)["study_flops"] / totals(pruned)["study_flops"] == pytest.approx(9.32, abs=0.01)


@pytest.mark.parametrize(
    "arch",
    [(12, 3, 16, 5, 100), (1, 3, 7, 5, 72), (8, 5, 8, 5, 50), (16, 3, 16, 3, 100), (16, 5, 8, 3, 50), (3, 1, 2, 1, 7)],
)
def test_macs_agree_with_torch_flop_counter(arch):
    model = FashionCNN(*arch, weight_init="normal")
    counts = totals(dict(zip(ARCH_KEYS, arch, strict=True)))
    assert counted_macs(model, batch=3) == counts["macs"]  # exact: FlopCounterMode counts 2 per multiply-add
    assert n_params(model) == counts["params"]
    per_layer = layer_counts(model.arch)
    assert sum(layer["macs"] for layer in per_layer.values()) == counts["macs"]
