"""The pruner replay: real Optuna pruners fed recorded curves (synthetic here, real in test_sweep.py)."""

import pytest

from fmnist.core.errors import UserError
from fmnist.pruner_replay import build_pruner, measure, replay


def _curve(trial, values, diverged=False, max_epochs=3):
    return {
        "trial": trial,
        "values": values,
        "test": [v - 0.01 for v in values],
        "max_epochs": max_epochs,
        "diverged": diverged,
    }


GOOD, BAD, BETTER = [0.80, 0.85, 0.88], [0.30, 0.35, 0.40], [0.82, 0.86, 0.89]


def test_asha_stops_the_clearly_worse_trial_after_its_first_epoch():
    out = replay([_curve(0, GOOD), _curve(1, BAD), _curve(2, BETTER)], build_pruner("asha", 3))
    assert out["epochs"] == {0: 3, 1: 1, 2: 3}
    assert out["picked"] == 2


def test_a_pruner_setting_can_be_changed_by_name():
    # asha's first rung at epoch 3 of 3: nothing is left to cut, so the clearly worse trial trains to the end too
    out = replay([_curve(0, GOOD), _curve(1, BAD), _curve(2, BETTER)], build_pruner("asha:min_resource=3", 3))
    assert out["epochs"] == {0: 3, 1: 3, 2: 3}


def test_no_pruner_trains_everything_and_a_diverged_trial_is_never_picked():
    curves = [_curve(0, GOOD), _curve(1, [0.95], diverged=True), _curve(2, BETTER)]
    out = replay(curves, build_pruner("none", 3))
    assert out["epochs"] == {0: 3, 1: 1, 2: 3}
    assert out["picked"] == 2  # 0.95 was the diverged trial's last value: a PRUNED trial is never the pick


def test_measure_reports_the_share_of_epochs_and_whether_the_best_was_kept():
    curves = [_curve(0, GOOD), _curve(1, BAD), _curve(2, BETTER), _curve(3, BAD)]
    results = {r["pruner"]: r for r in measure(curves, ("asha", "none"), orders=5)}
    assert results["none"]["epochs_share_mean"] == 1.0 and results["none"]["kept_best_share"] == 1.0
    assert results["none"]["picked_test_own_order"] == pytest.approx(0.89 - 0.01)
    assert results["asha"]["epochs_share_own_order"] == pytest.approx((3 + 1 + 3 + 1) / 12)
    assert results["asha"]["orders"] == 6


def test_unknown_pruner_is_one_line():
    with pytest.raises(UserError, match="unknown pruner 'sha'.*asha"):
        build_pruner("sha", 3)


def test_measure_says_how_often_the_pick_and_the_top_three_reach_the_targets():
    high = [_curve(i, [0.85, 0.90, 0.912 + i / 1000]) for i in range(3)]  # tests 0.902-0.904: >= the study's three
    results = measure([*high, _curve(3, BAD)], ("none",), orders=3, target=0.9035)
    assert results[0]["completed_mean"] == 4
    assert results[0]["pick_meets_share"] == results[0]["top3_meets_share"] == results[0]["both_meet_share"] == 1.0
    # two good trials are not a top three; a higher target is missed by the same pick
    results = measure([*high[1:], _curve(3, BAD)], ("none",), orders=3, target=0.91)
    assert results[0]["top3_meets_share"] == results[0]["pick_meets_share"] == 0.0
