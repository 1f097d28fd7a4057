"""fmnist.retrain: a pruned sweep's configurations trained to the end, on real data, then the two picks compared."""

import json
import shutil
from pathlib import Path

import pytest

from fmnist.core import runs
from fmnist.core.errors import UserError
from fmnist.core.stats import against
from fmnist.pruner_replay import curves_of
from fmnist.retrain import configurations, finish, main, retrain, top
from fmnist.search.trials import columns
from tests.helpers import SMALL


def _sweep_table(folder, rows):
    base = {
        "conv1_kernel": 3,
        "conv2_kernel": 5,
        "conv1_channels": 8,
        "conv2_channels": 8,
        "fc1_size": 50,
        "batch_size": 64,
        "momentum": 0.9,
        "weight_init": "xavier_normal",
        "max_epochs": 2,
        "test_accuracy": "",
        "test_loss": "",
        "train_accuracy": "",
        "best_epoch": "",
        "seconds": 1,
        "reason": "",
        "run_dir": "",
        "rank": "",
    }
    runs.write_csv([{**base, **r} for r in rows], columns(), folder / "summary.csv")


def test_a_pruned_better_configuration_is_found_when_trained_to_the_end(tmp_path):
    # what the sweep saw: trial 0 (lr 0.001) completed and picked; trial 1 (lr 0.01) pruned after one epoch.
    # Trained to the end, lr 0.01 learns far faster in two epochs: pruning lost the best configuration here.
    sweep, out = tmp_path / "sweep", tmp_path / "retrained"
    _sweep_table(
        sweep,
        [
            {"trial": 0, "state": "COMPLETE", "lr": 0.001, "epochs": 2, "val_accuracy": 0.9},
            {"trial": 1, "state": "PRUNED", "lr": 0.01, "epochs": 1, "val_accuracy": 0.5},
            {"trial": 2, "state": "FAIL", "lr": 0.01, "epochs": 0, "val_accuracy": ""},  # trained nothing: skipped
        ],
    )
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


@pytest.mark.slow  # a sweep, then its top configurations over seeds: over a minute on 2 cores
def test_the_top_configurations_are_trained_over_seeds_resumably_and_beside_the_study(tmp_path):
    # trial 3 has the best validation accuracy but was pruned: it does not count; the top two are trials 1 and 0
    sweep, out = tmp_path / "sweep", tmp_path / "finished"
    _sweep_table(
        sweep,
        [
            {"trial": 0, "state": "COMPLETE", "lr": 0.01, "epochs": 1, "val_accuracy": 0.70, "test_accuracy": 0.69},
            {"trial": 1, "state": "COMPLETE", "lr": 0.01, "fc1_size": 100, "epochs": 1, "val_accuracy": 0.72},
            {"trial": 2, "state": "COMPLETE", "lr": 0.001, "epochs": 1, "val_accuracy": 0.40},
            {"trial": 3, "state": "PRUNED", "lr": 0.01, "epochs": 1, "val_accuracy": 0.95},
        ],
    )
    extra = [o for o in SMALL if not o.startswith("trainer.max_epochs")] + ["trainer.precision=fp32"]
    result = finish(sweep, out, k=2, seeds=2, jobs=2, extra=extra)
    assert [c["trial"] for c in result["configurations"]] == [1, 0]
    for c in result["configurations"]:
        found = {s: runs.read_summary(out / str(c["trial"]) / f"seed{s}", "train") for s in (0, 1)}
        assert {f["config"]["trainer"]["seed"] for f in found.values()} == {0, 1}
        tests = [f["best"]["test_accuracy"] for f in found.values()]
        assert tests[0] != tests[1]  # the seed reached the run: another init and batch order
        assert c["seeds"] == [0, 1] and c["stats"]["test_accuracy"]["mean"] == pytest.approx(sum(tests) / 2)
        assert c["stats"]["test_accuracy"]["n"] == 2 and c["stats"]["test_accuracy"]["low"] < min(tests)
        assert found[0]["config"]["model"]["fc1_size"] == (100 if c["trial"] == 1 else 50)  # the trial's own config
    first, second = result["configurations"]
    assert (first["study_test"], second["study_test"]) == (0.9010, 0.9001)  # each rank beside the study's same rank
    assert first["runs_above_study"] == 0 and first["p_above_study"] < 0.5  # one epoch on a subset: below the study
    assert first["against_study"] == against(first["stats"]["test_accuracy"], 0.9010)  # two seeds: a wide interval
    table = (out / "finish.md").read_text()
    assert "| **test %** |" in table and "| 90.10 | 90.01 | 89.97 |" in table and "fmnist #1 (trial 1)" in table
    assert "| sweep: state | complete | complete |" in table  # a pruned trial that filled a place would say so
    # best.json: the best configuration by mean validation accuracy, one of its checkpoints, which prune resolves
    best = json.loads((out / "best.json").read_text())
    means = {c["trial"]: c["stats"]["val_accuracy"]["mean"] for c in result["configurations"]}
    assert best["trial"] == max(means, key=means.get)
    assert runs.resolve_checkpoint(str(out), tmp_path) == Path(best["checkpoint"]) and Path(best["checkpoint"]).exists()
    # resumable: a rerun trains only what is missing
    kept = (out / "1" / "seed0" / "metrics.csv").stat().st_mtime
    shutil.rmtree(out / "0" / "seed1")
    again = finish(sweep, out, k=2, seeds=2, jobs=1, extra=extra)
    assert (out / "1" / "seed0" / "metrics.csv").stat().st_mtime == kept
    assert again["configurations"][1]["stats"]["test_accuracy"]["n"] == 2
    # its time: the four runs' own, not only the one this invocation trained
    own = [runs.read_summary(out / t / f"seed{s}", "train")["wall_seconds"] for t in ("0", "1") for s in (0, 1)]
    assert again["runs"] == 4 and again["run_seconds"] == pytest.approx(sum(own))
    assert (
        again["run_seconds"] > again["seconds"]
        and f"4 runs of {sum(own) / 60:.1f} min in all" in (out / "finish.md").read_text()
    )


def test_pruned_trials_fill_the_top_deepest_first_below_every_completed_one_and_a_repeat_counts_once(tmp_path):
    # ASHA on a short budget completes few trials: the top three then takes the pruned trials that trained longest
    _sweep_table(
        tmp_path,
        [
            {
                "trial": 0,
                "state": "PRUNED",
                "lr": 0.01,
                "momentum": 0.99,
                "epochs": 1,
                "val_accuracy": 0.95,
            },  # shallowest
            {"trial": 1, "state": "COMPLETE", "lr": 0.01, "epochs": 2, "val_accuracy": 0.70},
            {"trial": 2, "state": "PRUNED", "lr": 0.001, "epochs": 4, "val_accuracy": 0.60},
            {"trial": 3, "state": "PRUNED", "lr": 0.01, "fc1_size": 100, "epochs": 4, "val_accuracy": 0.80},
            {"trial": 4, "state": "PRUNED", "lr": 0.01, "fc1_size": 100, "epochs": 4, "val_accuracy": 0.79},  # 3 again
            {"trial": 5, "state": "DIVERGED", "lr": 0.1, "epochs": 3, "val_accuracy": 0.10},  # never fills a place
        ],
    )
    assert [int(r["trial"]) for r in top(tmp_path, 3)] == [1, 3, 2]
    assert [int(r["trial"]) for r in top(tmp_path, 4)] == [1, 3, 2, 0]
    with pytest.raises(UserError, match=r"4 distinct configuration\(s\) that trained \(1 completed\).*--top 5"):
        top(tmp_path, 5)


def test_finishing_refuses_what_it_cannot_do(tmp_path, capsys):
    _sweep_table(tmp_path, [{"trial": 0, "state": "COMPLETE", "lr": 0.01, "epochs": 1, "val_accuracy": 0.7}])
    with pytest.raises(UserError, match=r"1 distinct configuration\(s\) that trained \(1 completed\).*--top 2"):
        top(tmp_path, 2)
    for argv, says in (
        (["--seeds", "3"], "--seeds needs --top K"),
        (["--top", "0"], "--top 0: give at least 1"),
        (["--top", "1", "trainer.seed=3"], "drop the trainer.seed override"),
    ):
        with pytest.raises(SystemExit) as e:
            main([str(tmp_path), "--out", str(tmp_path / "out"), *argv])
        assert says in str(e.value) and str(e.value).startswith("error: ")
    assert not (tmp_path / "out").exists()  # nothing written


def test_two_commands_launching_jobs_on_one_folder_keep_their_own_jobs(tmp_path, monkeypatch):
    # Hydra reads a job's config only when that job starts: a second findings/retrain command on the same out, started
    # while the first's multirun runs, must not swap the first's job files (it once did: one folder per name)
    from fmnist.training import jobs

    seen, started = [], []

    def multirun(cmd):
        searchpath = Path(
            next(a for a in cmd if a.startswith("hydra.searchpath="))[len("hydra.searchpath=['file://") : -2]
        )
        if not started:  # the first command's multirun is running: the second command launches its own
            started.append(cmd)
            jobs.launch([("b/seed0", ["trainer.seed=7"])], tmp_path, 1, [], name="findings")
        seen.append({p.name: p.read_text() for p in sorted((searchpath / "findings").glob("job*.yaml"))})

    monkeypatch.setattr(jobs, "run_group", multirun)
    outcomes = jobs.launch(
        [("a/seed0", ["trainer.seed=0"]), ("a/seed1", ["trainer.seed=1"])], tmp_path, 2, [], name="findings"
    )
    second, first = seen  # the inner (second) command's multirun ended first
    assert (
        list(first) == ["job0.yaml", "job1.yaml"]
        and "seed: 0" in first["job0.yaml"]
        and "a/seed1" in first["job1.yaml"]
    )
    assert list(second) == ["job0.yaml"] and "seed: 7" in second["job0.yaml"]
    assert outcomes["a/seed0"].startswith("failed")  # nothing trained (the multirun was a stand-in): no summary
    assert list((tmp_path / ".jobs").iterdir()) == []  # each command's job folder is gone once its multirun ends


def test_a_command_stopped_while_its_jobs_train_stops_them_and_a_rerun_resumes(tmp_path):
    # `kill` of a findings or retrain command once left its multirun and joblib workers training on (unrecorded, and
    # a rerun's runs then took their folders over) and its job folder behind
    import signal
    import subprocess
    import sys
    import time

    from fmnist.training import jobs
    from tests.helpers import REPO, read_rows

    job = [("a/seed0", ["trainer.seed=0"])]
    extra = [*SMALL, "trainer.max_epochs=4", "trainer.threads=1", "trainer.precision=fp32"]  # after SMALL's 1 epoch
    script = (
        f"import pathlib, fmnist.training.jobs as j; j.launch({job!r}, pathlib.Path({str(tmp_path)!r}), 1, {extra!r})"
    )
    command = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.PIPE, text=True)
    metrics, deadline = tmp_path / "a" / "seed0" / "metrics.csv", time.time() + 300
    while not (metrics.exists() and read_rows(metrics)) and time.time() < deadline and command.poll() is None:
        time.sleep(0.1)
    assert command.poll() is None, f"the command ended before its first epoch: {command.stderr.read()[-2000:]}"
    command.send_signal(signal.SIGTERM)
    assert command.wait(timeout=60) == 128 + signal.SIGTERM
    assert list((tmp_path / ".jobs").iterdir()) == []  # its job folder is gone
    epochs = len(read_rows(metrics))
    time.sleep(8)  # a worker left training would write an epoch (~2 s each here) meanwhile
    assert len(read_rows(metrics)) == epochs < 4 and not (tmp_path / "a" / "seed0" / "summary.json").exists()
    outcomes = jobs.launch(job, tmp_path, 1, extra)  # the same command again: the cut run resumes and ends
    assert outcomes == {"a/seed0": "completed"}
    assert "resuming from" in (tmp_path / "a" / "seed0" / "train.log").read_text()
    assert [int(r["epoch"]) for r in read_rows(metrics)] == [1, 2, 3, 4]
