"""fmnist.bench_train: the plain loop and fmnist's run timed in each precision side by side, with the ratios."""

import json

import pytest

from fmnist.bench_train import bench
from fmnist.core.errors import ConfigError
from tests.helpers import run_cli, small_cfg

TINY = ("data.subset=2000", "data.val_size=500", "trainer.progress=false")


@pytest.mark.slow  # every precision trained and timed beside the plain loop
def test_each_precision_timed_beside_the_plain_loop(tmp_path):
    proc = run_cli(
        "fmnist.bench_train",
        *TINY,
        "trainer.max_epochs=1",
        "logger=none",
        "trainer.threads=1",
        f"trainer.precision_cache={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'b'}",
    )
    result = json.loads((tmp_path / "b" / "bench_train.json").read_text())
    assert list(result["precisions"]) == ["fp32", "bf16"] and result["threads"] == 1
    fp32, bf16 = result["precisions"]["fp32"], result["precisions"]["bf16"]
    assert fp32["vs_first_plain"]["plain_loop"] == 1.0  # the ratios' base
    assert bf16["vs_first_plain"]["fmnist_epoch"] == pytest.approx(
        bf16["fmnist_epoch_seconds_with_eval"] / fp32["plain_loop_seconds_per_epoch"]
    )
    for precision in ("fp32", "bf16"):  # fmnist's own runs, in that precision, learned something
        summary = json.loads((tmp_path / "b" / precision / "summary.json").read_text())
        assert summary["precision"]["used"] == precision and summary["best"]["val_accuracy"] > 0.3
    assert result["auto"]["used"] in ("fp32", "bf16") and result["auto"]["requested"] == "auto"
    assert "fmnist whole epoch" in proc.stdout and "trainer.precision=auto picks" in proc.stdout


@pytest.mark.parametrize("precisions", ["[]", "[fp32,fp32]", "[fp32,int8]", "[auto]"])
def test_bad_precision_list_refused(tmp_path, precisions):
    with pytest.raises(ConfigError, match=r"bench_train.precisions=.*: give a list of distinct ones of fp32, bf16"):
        bench(small_cfg(tmp_path / "b", f"bench_train.precisions={precisions}", config_name="bench_train"))
    assert not (tmp_path / "b").exists()
