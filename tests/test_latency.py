"""Pruning to a budget, and latency-aware selection: real models and data; latency tables measured for real, or
written by hand where a test needs one layer to be expensive."""

import csv
import json

import pytest
import torch

from fmnist.core import checkpoint
from fmnist.core.errors import ConfigError, UserError
from fmnist.core.flops import totals
from fmnist.core.machine import keep_heap
from fmnist.core.model import layers
from fmnist.pruning.latency import (
    LatencyTable,
    _layer,
    _onnx_graph,
    _openvino_layer,
    machine,
    measure,
    table_path,
)
from fmnist.pruning.selection import choose
from fmnist.pruning.units import reachable
from fmnist.report import section_speed
from tests.helpers import compose_cfg, prune_small


def _trajectory(folder):
    with open(folder / "trajectory.csv") as f:
        return list(csv.DictReader(f))


def _flops_ratio(first, row):
    return int(first["study_flops"]) / int(row["study_flops"])


# global selection scores every unit of every layer at each step: a minute on 2 cores, so in the slow suite
@pytest.mark.parametrize("selection", ["layerwise", pytest.param("global", marks=pytest.mark.slow)])
def test_a_flops_budget_is_met_exactly(tmp_path, trained, selection):
    # no tolerance: the budget alone stops pruning, at the first step that reaches it and not one step later
    summary = prune_small(
        tmp_path, trained, f"prune.selection={selection}", "prune.tolerance=null", "prune.target_flops_ratio=2.5"
    )
    rows = _trajectory(tmp_path)
    ratios = [_flops_ratio(rows[0], r) for r in rows[1:]]
    assert ratios[-1] >= 2.5 > ratios[-2]
    assert summary["flops_ratio"] == pytest.approx(ratios[-1])
    assert summary["budget"]["met"] and summary["budget"]["stopped"] == "budget met"
    if selection == "layerwise":  # the study's order: conv1 first, to min_units if need be
        assert [r["layer"] for r in rows[1:]] == sorted((r["layer"] for r in rows[1:]), key=["conv1", "conv2"].index)


def test_global_selection_counts_a_saving_only_up_to_what_the_budget_needs():
    # (validation accuracy, FLOPs saved) from a model at 0.870: a conv1 channel saves 7x what four fc1 neurons save
    # and loses 5x as much, so per FLOP it goes first ...
    conv1, fc1 = (0.845, 68_000.0), (0.865, 9_700.0)
    assert choose([conv1, fc1], before=0.870) == 0
    # ... unless the budget needs only 9 000 more: both reach it, and the one that loses less ends pruning
    assert choose([conv1, fc1], before=0.870, need=9_000.0) == 1
    # a step short of the budget still wins when it loses less per FLOP than the one that reaches it
    assert choose([(0.860, 60_000.0), (0.869, 9_700.0)], before=0.870, need=50_000.0) == 1
    assert choose([(0.860, 60_000.0), (0.866, 9_700.0)], before=0.870, need=50_000.0) == 0
    # nothing saves anything: the best accuracy goes
    assert choose([(0.80, 0.0), (0.85, -1.0)], before=0.870, need=9_000.0) == 1


def test_accuracy_running_out_first_is_reported(tmp_path, trained):
    summary = prune_small(tmp_path, trained, "prune.tolerance=0", "prune.target_flops_ratio=20")
    assert not summary["budget"]["met"] and summary["budget"]["flops_ratio"] < 20
    assert summary["budget"]["stopped"] == "every layer done"


def _fake_table(path, arch, ms):
    """A table that holds every shape pruning `arch` can reach, with times from ms(layer)."""
    keep_heap()  # as prune's default trainer.malloc_heap does, before it reads the table's machine
    meta = machine("eager", torch.get_num_threads(), 1000)
    archs = reachable(arch, ["conv1", "conv2", "fc1"], 1, 1)
    entries = {layer.key: ms(layer) for a in archs for layer in layers(a)}
    path.write_text(json.dumps({"meta": meta, "entries": entries}))
    return path


def _expensive_conv2(layer):
    return (
        10.0 * layer.units if layer.name == "conv2" else 1.0
    )  # conv2's time grows with its channels; nothing else moves


def test_latency_aware_selection_prunes_the_expensive_layer_first(tmp_path, trained):
    arch = checkpoint.load_model(trained / "checkpoints" / "best.pt")[0].arch
    table = _fake_table(tmp_path / "table.json", arch, _expensive_conv2)
    prune_small(
        tmp_path / "latency",
        trained,
        "prune.selection=global",
        "prune.cost=latency",
        "prune.tolerance=null",
        "prune.target_speedup=1.5",
        f"latency.table={table}",
        "latency.engine=eager",
    )
    latency_layers = [r["layer"] for r in _trajectory(tmp_path / "latency")[1:]]
    assert latency_layers and set(latency_layers) == {"conv2"}
    assert _trajectory(tmp_path / "latency")[-1]["predicted_ms"]  # the trajectory carries predicted times
    assert (tmp_path / "latency" / "prune_accuracy_vs_time.png").read_bytes()[:4] == b"\x89PNG"
    section = section_speed([tmp_path / "latency"], tmp_path)  # the report's accuracy-vs-speed frontier
    assert "global by latency, budget: speedup 1.5x" in section
    assert f"![accuracy vs speed]({tmp_path / 'speed_frontier.png'})" in section
    assert (tmp_path / "speed_frontier.png").read_bytes()[:4] == b"\x89PNG"
    # with FLOPs as the cost, the same model and budget take other layers too
    prune_small(
        tmp_path / "flops",
        trained,
        "prune.selection=global",
        "prune.cost=flops",
        "prune.tolerance=null",
        "prune.target_flops_ratio=1.5",
    )
    assert set(r["layer"] for r in _trajectory(tmp_path / "flops")[1:]) != {"conv2"}


def _slow_one_channel_conv2(layer):
    """conv2's time grows with its channels, except that one channel runs a slow kernel (OpenVINO's on AVX2)."""
    if layer.name == "conv2":
        return 1000.0 if layer.units == 1 else 10.0 * layer.units
    return 1.0


def test_a_budget_the_narrowest_model_misses_is_still_met_by_a_wider_one(tmp_path, trained):
    arch = checkpoint.load_model(trained / "checkpoints" / "best.pt")[0].arch  # medium: conv2 has 16 channels
    table = _fake_table(tmp_path / "table.json", arch, _slow_one_channel_conv2)
    args = ["prune.selection=global", "prune.cost=latency", "prune.tolerance=null", f"latency.table={table}"]
    summary = prune_small(tmp_path / "out", trained, *args, "latency.engine=eager", "prune.target_speedup=4")
    assert summary["budget"]["met"] and 1 < summary["after"]["arch"]["conv2_channels"] <= 4
    # a budget no reachable width meets names the fastest one, not the narrowest
    with pytest.raises(UserError, match=r"the fastest, \(\d+, 2, \d+\), is predicted 7\.09x faster"):
        prune_small(tmp_path / "no", trained, *args, "latency.engine=eager", "prune.target_speedup=8")


def _fc1_cliff(layer):
    """fc1 gets cheap only at 16 neurons or fewer (ONNX Runtime's Gemm does so on our CPU); convs cost per channel."""
    if layer.name == "fc1":
        return 1.0 if layer.units <= 16 else 30.0
    return 0.5 * layer.units if layer.conv else 1.0


def test_min_saving_jumps_a_latency_cliff_in_one_step(tmp_path, trained):
    # medium costs 6 + 8 + 30 + 1 ms here: a 2x budget needs fc1 at <= 16 neurons, and removing fc1 neurons one at a
    # time saves nothing until then; with min_saving each candidate takes as many units as save 20 % of 45 ms
    arch = checkpoint.load_model(trained / "checkpoints" / "best.pt")[0].arch
    table = _fake_table(tmp_path / "table.json", arch, _fc1_cliff)
    summary = prune_small(
        tmp_path / "out",
        trained,
        "prune.selection=global",
        "prune.cost=latency",
        "prune.tolerance=null",
        "prune.target_speedup=2",
        "prune.min_saving=0.2",
        f"latency.table={table}",
        "latency.engine=eager",
    )
    rows = _trajectory(tmp_path / "out")
    fc1 = [
        (int(before["fc1_size"]), int(r["fc1_size"]), len(r["unit"].split()))
        for before, r in zip(rows, rows[1:], strict=False)
        if r["layer"] == "fc1"
    ]
    assert fc1 == [(100, 16, 84)]  # the fewest neurons that save 9 ms: straight down the cliff, the weakest 84
    assert summary["budget"]["met"] and summary["after"]["arch"]["fc1_size"] == 16


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (["prune.target_flops_ratio=0.5"], ConfigError, r"prune.target_flops_ratio=0.5 must be a number in \[1, inf\)"),
        (["prune.target_flops_ratio=5000"], UserError, "cannot be met"),
        (["prune.target_speedup=50"], UserError, "cannot be met on eager"),
        (["latency.engine=tensorrt"], ConfigError, "'tensorrt': use one of eager, onnxruntime, bf16, openvino"),
        (["prune.selection=global", "prune.tolerance=null"], ConfigError, "would prune every layer to min_units"),
        (["prune.min_saving=0.1"], ConfigError, "prune.min_saving sizes global selection's candidates"),
        (["prune.selection=global", "prune.min_saving=1.5"], ConfigError, r"prune.min_saving=1.5 must be .* \(0, 1\)"),
    ],
)
def test_bad_budget_or_engine(tmp_path, trained, overrides, error, message):
    arch = checkpoint.load_model(trained / "checkpoints" / "best.pt")[0].arch
    table = _fake_table(tmp_path / "table.json", arch, _expensive_conv2)
    before = table.read_text()
    with pytest.raises(error, match=message):
        prune_small(tmp_path / "out", trained, f"latency.table={table}", "latency.engine=eager", *overrides)
    assert not (tmp_path / "out" / "pruned.pt").exists() and table.read_text() == before


def test_a_table_from_another_machine_is_refused(tmp_path, trained):
    arch = checkpoint.load_model(trained / "checkpoints" / "best.pt")[0].arch
    table = _fake_table(tmp_path / "table.json", arch, _expensive_conv2)
    saved = json.loads(table.read_text())
    saved["meta"]["cpu"] = "Some Other CPU"
    table.write_text(json.dumps(saved))
    with pytest.raises(UserError, match="measured elsewhere .*cpu 'Some Other CPU'"):
        prune_small(
            tmp_path / "out",
            trained,
            "prune.cost=latency",
            "prune.selection=global",
            f"latency.table={table}",
            "latency.engine=eager",
        )
    assert json.loads(table.read_text()) == saved


def test_onnxruntime_missing_says_what_to_do(tmp_path, trained, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails, as where it is not installed
    cfg = compose_cfg(tmp_path, ["latency.engine=onnxruntime"], config_name="latency")
    with pytest.raises(UserError, match="onnxruntime is not installed: pip install onnxruntime"):
        LatencyTable.open(cfg.latency)
    # a prune that needs no table never touches the engine (latency.engine=onnxruntime is the default)
    summary = prune_small(tmp_path / "plain", trained, "prune.layers=[fc1]", "prune.step=30", "prune.tolerance=1")
    assert summary["predicted_speedup"] is None


@pytest.mark.parametrize("layer", ["conv1", "conv2", "fc1", "fc2"])
def test_onnx_layer_graph_computes_the_layer(layer):
    import onnxruntime

    arch = {"conv1_channels": 3, "conv1_kernel": 3, "conv2_channels": 4, "conv2_kernel": 5, "fc1_size": 7}
    described = next(d for d in layers(arch) if d.name == layer)
    module, in_shape = _layer(described), described.in_shape
    x = torch.randn(5, *in_shape)
    session = onnxruntime.InferenceSession(_onnx_graph(module, in_shape), providers=["CPUExecutionProvider"])
    torch.testing.assert_close(
        torch.from_numpy(session.run(None, {"x": x.numpy()})[0]), module(x).detach(), atol=1e-5, rtol=1e-4
    )


def test_measured_table_is_cached_and_reused(tmp_path):
    cfg = compose_cfg(
        tmp_path,
        [f"latency.dir={tmp_path}", "latency.batch_size=50", "latency.repeats=2", "latency.engine=eager"],
        config_name="latency",
    )
    arch = {"conv1_channels": 4, "conv1_kernel": 3, "conv2_channels": 4, "conv2_kernel": 5, "fc1_size": 8}
    table = LatencyTable.open(cfg.latency)
    per_layer = table.layers_ms(arch)
    assert table.measured == 4 and all(ms > 0 for ms in per_layer.values())
    assert table.model_ms(arch) == pytest.approx(sum(per_layer.values()))
    table.save()
    again = LatencyTable.open(cfg.latency)
    assert again.model_ms(arch) == table.model_ms(arch) and again.measured == 0  # read, not measured again
    assert measure(layers(arch)[-1], "eager", 50, 1, 0) > 0
    assert totals(arch)["study_flops"] > 0


def test_bf16_engine_times_its_layers_under_autocast_in_its_own_table(tmp_path, monkeypatch):
    entered = []

    class Recording(torch.autocast):
        def __enter__(self):
            entered.append(self.fast_dtype)
            return super().__enter__()

    monkeypatch.setattr(torch, "autocast", Recording)
    cfg = compose_cfg(tmp_path, ["latency.engine=bf16", "latency.batch_size=100"], config_name="latency")
    conv2 = layers({"conv1_channels": 4, "conv1_kernel": 3, "conv2_channels": 6, "conv2_kernel": 5, "fc1_size": 8})[1]
    assert measure(conv2, "bf16", 100, repeats=2, warmup=1) > 0
    assert entered == [torch.bfloat16] * 3  # every call, the warm-up's too
    assert measure(conv2, "eager", 100, repeats=2, warmup=1) > 0 and len(entered) == 3
    assert machine("bf16", 1, 100)["engine"] == "bf16"
    eager = compose_cfg(tmp_path, ["latency.engine=eager", "latency.batch_size=100"], config_name="latency")
    assert "bf16-" in str(table_path(cfg.latency, 1)) and table_path(cfg.latency, 1) != table_path(eager.latency, 1)


@pytest.mark.parametrize("layer", ["conv1", "conv2", "fc1", "fc2"])
def test_openvino_layer_graph_computes_the_layer(layer):
    arch = {"conv1_channels": 3, "conv1_kernel": 3, "conv2_channels": 4, "conv2_kernel": 5, "fc1_size": 7}
    described = next(d for d in layers(arch) if d.name == layer)
    module = _layer(described)
    x = torch.randn(5, *described.in_shape)
    compiled = _openvino_layer(module, described.in_shape, "openvino_f32")
    torch.testing.assert_close(torch.from_numpy(compiled(x.numpy())[0]), module(x).detach(), atol=1e-5, rtol=1e-4)


def test_an_openvino_table_is_its_own_and_names_its_precision(tmp_path):
    import openvino

    arch = {"conv1_channels": 2, "conv1_kernel": 3, "conv2_channels": 3, "conv2_kernel": 5, "fc1_size": 6}
    base = [f"latency.dir={tmp_path}", "latency.batch_size=50", "latency.repeats=2", "latency.warmup=1"]
    f32 = compose_cfg(tmp_path, [*base, "latency.engine=openvino_f32"], config_name="latency")
    table = LatencyTable.open(f32.latency)
    assert table.meta["openvino"] == openvino.__version__ and table.meta["precision"] == "f32"
    assert all(ms > 0 for ms in table.layers_ms(arch).values()) and table.measured == 4
    saved = table.save()
    assert saved.name.startswith("openvino_f32-") and LatencyTable.open(f32.latency).measured == 0
    # the default precision is what the CPU plugin picks here (bf16 only where the CPU computes it natively)
    default = compose_cfg(tmp_path, [*base, "latency.engine=openvino"], config_name="latency")
    native = openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    assert LatencyTable.open(default.latency).meta["precision"] == native
    assert table_path(default.latency) != saved and not LatencyTable.open(default.latency).entries


def test_an_openvino_table_without_openvino_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    cfg = compose_cfg(tmp_path, [f"latency.dir={tmp_path}", "latency.engine=openvino"], config_name="latency")
    with pytest.raises(UserError, match=r"engine=openvino: openvino is not installed: pip install -e '.\[deploy\]'"):
        LatencyTable.open(cfg.latency)
    assert not list(tmp_path.glob("*.json"))
