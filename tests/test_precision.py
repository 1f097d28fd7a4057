"""trainer.precision: auto's rule, bf16 training that learns (autocast per step, never per epoch), the same metrics
for the same seed and precision, the choice recorded, bad precisions refused before anything is written, a resumed
run keeping its precision, a bf16 checkpoint fine-tuned in fp32."""

import pytest
import torch

from fmnist.core import checkpoint
from fmnist.core.data import load_splits
from fmnist.core.errors import ConfigError, UserError
from fmnist.core.precision import resolve
from fmnist.core.runs import METRICS
from fmnist.training import loop
from fmnist.training.run import train
from tests.helpers import prune_small, read_rows, small_cfg

CPU = torch.device("cpu")
TINY = ("data.subset=3000", "data.val_size=500")


def _never():
    raise AssertionError("auto timed a step where its rule already knows the answer")


@pytest.mark.parametrize("flags", [{"avx2"}, {"avx2", "avx512f", "avx512bw"}])
def test_auto_stays_fp32_without_timing_on_a_cpu_without_native_bf16(flags):
    chosen = resolve("auto", CPU, flags, timing=_never)
    assert chosen["used"] == "fp32" and chosen["why"].startswith("auto: the CPU has no native bf16")


@pytest.mark.parametrize(
    "flags, step_ms, expected",
    [
        ({"amx_bf16", "amx_tile", "avx512_bf16"}, {"fp32": 18.0, "bf16": 6.7}, "bf16"),  # the AMX Xeon (issue 18)
        ({"avx512_bf16"}, {"fp32": 24.2, "bf16": 28.4}, "fp32"),  # AVX512-BF16 without AMX (docs/training.md)
        ({"avx512_bf16"}, {"fp32": 10.0, "bf16": 9.5}, "fp32"),
    ],  # within noise: not worth a change of arithmetic
)
def test_auto_times_the_step_where_the_cpu_has_native_bf16(flags, step_ms, expected):
    chosen = resolve("auto", CPU, flags, timing=lambda: step_ms)
    assert chosen["used"] == expected and chosen["step_ms"] == step_ms
    assert f"{step_ms['fp32']:.1f} ms in fp32, {step_ms['bf16']:.1f} ms in bf16" in chosen["why"]
    assert resolve("auto", CPU, flags)["used"] == "fp32"  # nothing to time with: the safe arithmetic


def test_step_times_measure_once_per_machine_and_model(tmp_path):
    cfg = small_cfg(tmp_path / "run")
    model = loop.build_model(cfg.model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    ms = loop.step_times(model, cfg.optimizer, 64, CPU, tmp_path / "cache", rounds=2, steps=1)
    assert set(ms) == {"fp32", "bf16"} and all(v > 0 for v in ms.values())
    assert torch.equal(torch.get_rng_state(), rng)  # the run's seeded init and batch order are untouched
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # timed on a copy
    (cached,) = (tmp_path / "cache").iterdir()
    cached.write_text(cached.read_text().replace(f"{ms['fp32']}", "123.0"))
    assert loop.step_times(model, cfg.optimizer, 64, CPU, tmp_path / "cache")["fp32"] == 123.0  # read, not timed
    loop.step_times(model, cfg.optimizer, 32, CPU, tmp_path / "cache", rounds=1, steps=1)  # another batch size
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_asked_precisions_on_the_cpu():
    assert resolve("fp32", CPU, set()) == {"requested": "fp32", "used": "fp32", "why": "asked for"}
    assert resolve("bf16", CPU, {"avx2"})["used"] == "bf16"  # emulated there: slower, but it runs
    with pytest.raises(UserError, match="trainer.precision=fp16 needs a CUDA GPU"):
        resolve("fp16", CPU)


@pytest.mark.parametrize(
    "override, error, message",
    [
        ("trainer.precision=fp8", ConfigError, "trainer.precision='fp8': use one of auto, fp32, bf16, fp16"),
        ("trainer.precision=fp16", UserError, "trainer.precision=fp16 needs a CUDA GPU"),
    ],
)
def test_bad_precision_refused_before_anything_is_written(tmp_path, override, error, message):
    with pytest.raises(error, match=message):
        train(small_cfg(tmp_path / "run", override, "trainer.device=cpu"))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # bf16 training, emulated (and slower) on a CPU without native bf16
def test_a_bf16_run_learns_repeats_itself_keeps_its_precision_on_resume_and_prunes_in_fp32(tmp_path):
    """One test, so the bf16 epochs (emulated, slow, on a CPU without native bf16) are trained once."""
    a, b = (train(small_cfg(tmp_path / name, "trainer.precision=bf16", *TINY)) for name in ("a", "b"))
    assert a["precision"] == {"used": "bf16", "why": "asked for", "requested": "bf16"}
    assert a["last"]["train_loss"] < 2.0 and a["best"]["val_accuracy"] > 0.6
    assert {k: a["last"][k] for k in METRICS} == {k: b["last"][k] for k in METRICS}  # same seed and precision
    ckpt = checkpoint.load(tmp_path / "a" / "checkpoints" / "last.pt")
    assert ckpt["precision"]["used"] == "bf16"
    assert all(v.dtype == torch.float32 for v in ckpt["state_dict"].values())  # weights stay fp32

    with pytest.raises(UserError, match="was trained in bf16 but trainer.precision=fp32: a resumed run keeps"):
        train(small_cfg(tmp_path / "a", "trainer.precision=fp32", "trainer.max_epochs=2", *TINY))
    resumed = train(small_cfg(tmp_path / "a", "trainer.precision=auto", "trainer.max_epochs=2", *TINY))
    assert resumed["epochs_run"] == 2 and resumed["precision"]["used"] == "bf16"
    rows = read_rows(tmp_path / "a" / "metrics.csv")
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])

    pruned = prune_small(
        tmp_path / "prune",
        tmp_path / "a" / "checkpoints" / "best.pt",
        "prune.layers=[fc1]",
        "prune.step=40",
        "prune.tolerance=1",
        "prune.finetune_epochs=0.1",
        "trainer.precision=fp32",
    )
    assert pruned["precision"]["used"] == "fp32" and pruned["after"]["arch"]["fc1_size"] < 100


def test_one_autocast_around_a_whole_epoch_would_not_learn(tmp_path):
    """The trap the per-step autocast avoids: inside one long context autocast keeps the first bf16 copy of every
    weight, so the epoch trains on stale weights (its mean loss stays at chance's 2.30); per step it learns."""
    cfg = small_cfg(tmp_path / "run", *TINY)
    data = load_splits(cfg.data)
    losses = {}
    for how in ("per_step", "per_epoch"):
        torch.manual_seed(0)
        model = loop.build_model(cfg.model)
        optimizer = loop.build_optimizer(cfg.optimizer, model)
        generator = torch.Generator().manual_seed(0)
        args = (model, optimizer, data.train_x, data.train_y, 64, generator)
        if how == "per_step":
            losses[how] = loop.train_epoch(*args, precision="bf16")[0]
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                losses[how] = loop.train_epoch(*args)[0]
    assert losses["per_step"] < 1.5 < 2.2 < losses["per_epoch"], losses
