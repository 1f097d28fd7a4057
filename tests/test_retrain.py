"""fmnist.retrain: a pruned sweep's configurations trained to the end, on real data, then the two picks compared."""

import json

import pytest

from fmnist.core import runs
from fmnist.core.errors import UserError
from fmnist.ops.trials import columns
from fmnist.pruner_replay import curves_of
from fmnist.retrain import configurations, retrain
from tests.helpers import SMALL


def _sweep_table(folder, rows):
    base = {"conv1_kernel": 3, "conv2_kernel": 5, "conv1_channels": 8, "conv2_channels": 8, "fc1_size": 50,
            "batch_size": 64, "momentum": 0.9, "weight_init": "xavier_normal", "max_epochs": 2, "test_accuracy": "",
            "test_loss": "", "train_accuracy": "", "best_epoch": "", "seconds": 1, "reason": "", "run_dir": "",
            "rank": ""}  # fmt: skip
    runs.write_csv([{**base, **r} for r in rows], columns(), folder / "summary.csv")


def test_a_pruned_better_configuration_is_found_when_trained_to_the_end(tmp_path):
    # what the sweep saw: trial 0 (lr 0.001) completed and picked; trial 1 (lr 0.01) pruned after one epoch.
    # Trained to the end, lr 0.01 learns far faster in two epochs: pruning lost the best configuration here.
    sweep, out = tmp_path / "sweep", tmp_path / "retrained"
    _sweep_table(sweep, [
        {"trial": 0, "state": "COMPLETE", "lr": 0.001, "epochs": 2, "val_accuracy": 0.9},
        {"trial": 1, "state": "PRUNED", "lr": 0.01, "epochs": 1, "val_accuracy": 0.5},
        {"trial": 2, "state": "FAIL", "lr": 0.01, "epochs": 0, "val_accuracy": ""},  # trained nothing: skipped
    ])  # fmt: skip
    extra = [o for o in SMALL if not o.startswith("trainer.max_epochs")] + ["trainer.precision=fp32"]
    result = retrain(sweep, out, jobs=2, extra=extra)
    assert [t["trial"] for t in result["trials"]] == [0, 1]
    assert all(t["precision"] == "fp32" for t in result["trials"])  # every run computes in the precision asked for
    assert all(t["epochs"] == 2 and t["status"] == "completed" for t in result["trials"])  # the sweep's max_epochs
    assert (result["sweep_pick"], result["unpruned_pick"], result["lost_best"]) == (0, 1, True)
    assert result["sweep_pick_rank"] == 2
    assert "pruning **lost** the best configuration" in (out / "retrain.md").read_text()
    written = json.loads((out / "retrain.json").read_text())
    assert written["unpruned_pick"] == 1
    # whole curves that fmnist.pruner_replay can replay, in the sweep's trial order
    curves = curves_of(out)
    assert [c["trial"] for c in curves] == [0, 1] and all(len(c["values"]) == 2 for c in curves)
    # a rerun trains nothing again
    before = (out / "1" / "metrics.csv").stat().st_mtime
    retrain(sweep, out, jobs=1, extra=extra)
    assert (out / "1" / "metrics.csv").stat().st_mtime == before


def test_a_folder_without_a_sweep_table_is_refused(tmp_path):
    with pytest.raises(UserError, match="no summary.csv"):
        configurations(tmp_path)
