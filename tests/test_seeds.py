"""Results over seeds: intervals of known values, runs grouped by all but the seed, the paired comparison, and the
command on real training runs."""

import json
import math
import statistics

import pytest
from scipy import stats

from fmnist.analysis.seeds import group_runs
from fmnist.core import runs
from fmnist.core.errors import UserError
from fmnist.core.stats import against, interval, paired, prob_above, ratio, rounds_for, seeds_for
from fmnist.seeds import main
from fmnist.sweep_summary import main as sweep_summary
from fmnist.training.run import train
from tests.helpers import small_cfg


def test_interval_of_known_values():
    s = interval([0.90, 0.91, 0.92])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.91) and s["std"] == pytest.approx(0.01)
    half = 4.302653 * 0.01 / math.sqrt(3)  # t(0.975, 2 degrees of freedom) = 4.302653
    assert (s["low"], s["high"]) == (pytest.approx(0.91 - half, abs=1e-6), pytest.approx(0.91 + half, abs=1e-6))
    assert interval([0.5])["low"] is None  # one value: no interval
    with pytest.raises(ValueError):
        interval([])


def test_an_accuracy_interval_stops_at_100_percent():
    free, cut = interval([0.934, 0.991, 1.0, 1.0]), interval([0.934, 0.991, 1.0, 1.0], bounds=(0.0, 1.0))
    assert free["high"] > 1.0 and cut["high"] == 1.0  # a t interval runs past 100 %; an accuracy's mean cannot
    assert cut["low"] == free["low"] and cut["mean"] == free["mean"] and cut["std"] == free["std"]
    low = interval([0.02, 0.40], bounds=(0.0, 1.0))  # n=2: t with one degree of freedom is wide both ways
    assert low["low"] == 0.0 and low["high"] == 1.0


def test_ratio_paired_by_round_of_known_values():
    r = ratio([2.0, 4.4, 3.0], [1.0, 2.0, 1.5])  # per round: 2.0, 2.2, 2.0
    logs = [math.log(2.0), math.log(2.2), math.log(2.0)]
    assert r["n"] == 3 and r["ratio"] == pytest.approx(math.exp(sum(logs) / 3))
    assert r["low"] < r["ratio"] < r["high"] and r["halfwidth"] == pytest.approx(r["high"] / r["ratio"] - 1)
    assert ratio([5.0, 5.0], [1.0, 1.0])["halfwidth"] == 0  # no spread: the interval is the ratio
    # a slow round slows both models: pairing by round cancels it, where unpaired medians would not
    assert ratio([2.0, 6.0, 2.0], [1.0, 3.0, 1.0])["halfwidth"] == pytest.approx(0)


def test_a_bench_interval_narrows_with_more_rounds():
    import random

    draw = random.Random(0)  # rounds with 10 % timing noise on each model around a true speedup of 5x
    orig = [5.0 * draw.lognormvariate(0, 0.1) for _ in range(40)]
    pruned = [1.0 * draw.lognormvariate(0, 0.1) for _ in range(40)]
    widths = [ratio(orig[:n], pruned[:n])["halfwidth"] for n in (3, 10, 40)]
    assert widths[0] > widths[1] > widths[2] and widths[2] < 0.05
    assert ratio(orig, pruned)["low"] < 5.0 < ratio(orig, pruned)["high"]


def test_rounds_for_a_target_interval_from_the_measured_spread():
    import random

    draw = random.Random(1)  # 10 rounds with 10 % noise on each model: an interval near ±10 %
    orig = [5.0 * draw.lognormvariate(0, 0.1) for _ in range(2000)]
    pruned = [1.0 * draw.lognormvariate(0, 0.1) for _ in range(2000)]
    r = ratio(orig[:10], pruned[:10])
    assert rounds_for(r, r["halfwidth"]) == 10  # its own width: the rounds it has
    needed = rounds_for(r, 0.05)
    sd = statistics.stdev(math.log(a / b) for a, b in zip(orig[:10], pruned[:10], strict=True))
    # the smallest m with t(m-1) * sd / sqrt(m) <= log(1.05): checked at m and m-1 by hand
    t = lambda m: stats.t.ppf(0.975, m - 1) * sd / math.sqrt(m)  # noqa: E731
    assert t(needed) <= math.log(1.05) < t(needed - 1)
    # and that many rounds of the same noise do narrow to about ±5 % (the spread is re-estimated, so loosely)
    assert 0.035 < ratio(orig[:needed], pruned[:needed])["halfwidth"] < 0.065
    assert rounds_for(ratio([2.0], [1.0]), 0.05) is None  # one round: no spread known


def test_seeds_for_a_paired_difference_to_clear_zero_match_the_power_tables():
    import random

    # a paired t test at 5 %, two-sided, 80 % power: an effect of one standard deviation needs 10 pairs, half of one 34
    # (Cohen's tables; G*Power gives the same)
    assert seeds_for({"mean": 0.01, "std": 0.01, "level": 0.95}) == 10
    assert seeds_for({"mean": -0.005, "std": 0.01, "level": 0.95}) == 34  # either sign
    assert seeds_for({"mean": 0.3, "std": None, "level": 0.95}) is None  # one seed: no spread known
    # and that many seeds of such a difference do clear zero about 80 % of the time
    draw = random.Random(0)
    cleared = [interval([draw.gauss(0.5, 1.0) for _ in range(34)])["low"] > 0 for _ in range(400)]
    assert 0.74 < sum(cleared) / 400 < 0.86


def test_paired_difference_uses_the_common_seeds():
    d = paired({0: 1.0, 1: 2.0, 2: 3.0, 3: 9.0}, {0: 1.5, 1: 2.4, 2: 3.7})
    assert d["paired_by"] == [0, 1, 2] and d["mean"] == pytest.approx(0.5333333)
    assert d["low"] < d["mean"] < d["high"]


def test_only_an_interval_that_clears_a_number_is_above_it():
    s = interval([0.90, 0.91, 0.92])
    assert [against(s, x) for x in (0.85, 0.90, 0.95)] == ["above", "inside", "below"]
    assert against(interval([0.99]), 0.5) == "inside"  # a single run beats nothing


def _run(folder, seed, precision, val, status="completed"):
    config = {
        "data": {"batch_size": 128, "val_size": 5000, "split_seed": 0, "subset": None},
        "model": {"_target_": "x", "conv1_channels": 12},
        "optimizer": {"lr": 0.01},
        "trainer": {"seed": seed, "max_epochs": 40, "threads": seed},
    }  # threads differ: not part of a group
    best = {"epoch": 10 + seed, "val_accuracy": val, "test_accuracy": val - 0.01, "val_loss": 0.3, "test_loss": 0.3}
    runs.write_summary(
        "train",
        {"status": status, "best": best, "config": config, "device": "cpu", "precision": {"used": precision}},
        folder,
    )


def test_probability_that_a_mean_is_above_a_number():
    s = interval([0.90, 0.92])  # mean 0.91, std 0.01414, n=2: the t distribution with 1 degree of freedom (Cauchy)
    assert prob_above(s, 0.91) == pytest.approx(0.5)
    # (0.91 - 0.90) / (0.01414 / sqrt 2) = 1.0 standard error: Cauchy's cdf at 1 is 3/4
    assert prob_above(s, 0.90) == pytest.approx(0.75)
    assert prob_above(s, 0.92) == pytest.approx(0.25)
    assert prob_above(interval([0.9]), 0.5) is None  # one value: no spread, no probability
    assert prob_above(interval([0.9, 0.9]), 0.89) == 1.0  # no spread: the mean decides


def test_runs_grouped_by_all_but_the_seed_and_compared_seed_by_seed(tmp_path):
    for seed, (a, b) in enumerate([(0.90, 0.905), (0.91, 0.912), (0.92, 0.93)]):
        _run(tmp_path / "fp32" / str(seed), seed, "fp32", a)
        _run(tmp_path / "bf16" / str(seed), seed, "bf16", b)
    _run(tmp_path / "bf16" / "3", 3, "bf16", 0.1, status="diverged")
    result = group_runs([tmp_path / "fp32", tmp_path / "bf16"])
    fp32, bf16 = result["groups"]
    assert result["differs"] == ["precision"] and (fp32["label"], bf16["label"]) == ("precision=fp32", "precision=bf16")
    assert fp32["seeds"] == bf16["seeds"] == [0, 1, 2] and list(bf16["not_completed"]) == [3]
    assert fp32["stats"]["val_accuracy"]["mean"] == pytest.approx(0.91)
    assert fp32["stats"]["epoch"]["mean"] == pytest.approx(11)
    assert result["paired"]["val_accuracy"]["mean"] == pytest.approx((0.005 + 0.002 + 0.01) / 3)

    _run(tmp_path / "again" / "0", 0, "fp32", 0.5)
    with pytest.raises(UserError, match="repeats seed 0 of the same configuration"):
        group_runs([tmp_path / "fp32", tmp_path / "again"])
    with pytest.raises(UserError, match="no training or prune run"):
        group_runs([tmp_path / "empty"])


def test_the_command_on_real_runs(tmp_path, capsys):
    for seed in (0, 1):
        train(
            small_cfg(
                tmp_path / "runs" / str(seed),
                f"trainer.seed={seed}",
                "data.subset=2000",
                "data.val_size=500",
                "trainer.precision=fp32",
            )
        )
    main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    (group,) = json.loads((tmp_path / "out" / "seeds.json").read_text())["groups"]
    assert group["seeds"] == [0, 1] and group["stats"]["test_accuracy"]["n"] == 2
    assert group["stats"]["test_accuracy"]["low"] < group["stats"]["test_accuracy"]["mean"]
    assert "| all runs | 0,1 |" in printed and (tmp_path / "out" / "seeds.md").read_text() in printed
    with pytest.raises(SystemExit, match="error: .*no training or prune run"):
        main([str(tmp_path / "nothing")])
    # the same grouping from fmnist.sweep_summary on a folder of plain runs (no Optuna study), written beside them
    sweep_summary([str(tmp_path / "runs")])
    assert (tmp_path / "runs" / "seeds.md").read_text() == (tmp_path / "out" / "seeds.md").read_text()
