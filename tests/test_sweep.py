"""Real `--multirun` sweeps as subprocesses: tiny data, one epoch, grid sampler over a 2x2 space."""

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, TINY, read_rows, run_cli, sweep_cmd


def _trials(sweep_dir):
    with sqlite3.connect(sweep_dir / "optuna.db") as db:
        return db.execute("select number, state from trials order by number").fetchall()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_root):
    sweep_dir = tmp_path_factory.mktemp("sweep") / "study"
    # lr=50 diverges at once: that trial must be pruned and the sweep must go on
    run_cli(*sweep_cmd(sweep_dir, "hydra.sweeper.n_trials=3", "optimizer.lr=50,0.01", "model.fc1_size=50,100"))
    return sweep_dir


def test_sweep_writes_ranked_table_and_best_json(sweep):
    rows = read_rows(sweep / "summary.csv")
    assert len(rows) == 3 and {r["trial"] for r in rows} == {"0", "1", "2"}
    completed = [r for r in rows if r["state"] == "COMPLETE"]
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    assert completed and pruned, "the grid's 3 first points mix lr=0.01 and lr=50"
    assert all(r["lr"] == "50" and r["reason"].startswith("diverged: training loss became nan") for r in pruned)
    assert all(r["lr"] == "0.01" for r in completed)
    vals = [float(r["val_accuracy"]) for r in completed]
    assert vals == sorted(vals, reverse=True) and completed[0]["rank"] == "1"
    best = json.loads((sweep / "best.json").read_text())
    top = completed[0]
    assert best["trial"] == int(top["trial"]) and best["metrics"]["val_accuracy"] == pytest.approx(
        float(top["val_accuracy"])
    )
    ckpt = torch.load(best["checkpoint"], weights_only=True)
    assert (
        ckpt["arch"]["fc1_size"] == int(top["fc1_size"])
        and Path(best["checkpoint"]).parent.parent == sweep / top["trial"]
    )
    run_summary = json.loads((sweep / top["trial"] / "summary.json").read_text())
    assert run_summary["best"]["test_accuracy"] == pytest.approx(float(top["test_accuracy"]))
    assert "| rank | trial | state | conv1_kernel" in (sweep / "summary.md").read_text()
    assert (sweep / "optimization_results.yaml").exists()


def test_rerun_resumes_and_adds_only_the_rest(sweep):
    before = {p: p.stat().st_mtime_ns for p in sweep.glob("[0-9]*/summary.json")}
    run_cli(*sweep_cmd(sweep, "hydra.sweeper.n_trials=10", "optimizer.lr=50,0.01", "model.fc1_size=50,100"))
    assert [n for n, _ in _trials(sweep)] == [0, 1, 2, 3]  # the grid has 4 points: only the missing one ran
    assert {p: p.stat().st_mtime_ns for p in sweep.glob("[0-2]/summary.json")} == before  # earlier trials kept
    rows = read_rows(sweep / "summary.csv")
    assert sorted((r["lr"], r["fc1_size"]) for r in rows) == [
        ("0.01", "100"),
        ("0.01", "50"),
        ("50", "100"),
        ("50", "50"),
    ]
    run_cli(*sweep_cmd(sweep, "hydra.sweeper.n_trials=10", "optimizer.lr=50,0.01", "model.fc1_size=50,100"))
    assert len(_trials(sweep)) == 4  # complete: a third run adds nothing


def test_sweep_summary_command_rebuilds_results(sweep):
    (sweep / "best.json").unlink()
    out = run_cli("fmnist.sweep_summary", str(sweep))
    assert "| 1 |" in out.stdout and (sweep / "best.json").exists()


def test_compare_plots_are_pngs(sweep):
    out = run_cli("fmnist.plots", "compare", str(sweep), "--by", "optimizer.lr", "--by", "model.fc1_size")
    pngs = [Path(line) for line in out.stdout.split()]
    assert [p.name for p in pngs] == ["compare_optimizer_lr.png", "compare_model_fc1_size.png"]
    for png in pngs:
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_every_trial_failing_fails_the_sweep(tmp_path, data_root):
    proc = run_cli(*sweep_cmd(tmp_path / "s", "hydra.sweeper.n_trials=2", "optimizer.lr=50", "model.fc1_size=50,100"),
                   check=False)  # fmt: skip
    assert proc.returncode != 0 and "every trial of study" in proc.stderr and "diverged" in proc.stderr


def test_killed_sweep_resumes_with_stale_trial_rerun(tmp_path, data_root):
    sweep_dir = tmp_path / "s"
    cmd = sweep_cmd(sweep_dir, "hydra.sweeper.n_trials=2", "optimizer.lr=0.01,0.001", "trainer.max_epochs=3")
    proc = subprocess.Popen(
        [sys.executable, "-m", *cmd], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not (sweep_dir / "0" / "metrics.csv").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # kill -9 in the middle of trial 0
    proc.wait()
    assert _trials(sweep_dir) == [(0, "RUNNING")]
    run_cli(*cmd)
    rows = read_rows(sweep_dir / "summary.csv")
    assert sorted(r["state"] for r in rows) == ["COMPLETE", "COMPLETE", "FAIL"]
    assert [r["reason"] for r in rows if r["state"] == "FAIL"][0].startswith("stale: its worker")
    assert sorted(r["lr"] for r in rows if r["state"] == "COMPLETE") == ["0.001", "0.01"]  # both grid points ran


def test_two_workers_share_one_study(tmp_path, data_root):
    sweep_dir = tmp_path / "s"
    cmd = sweep_cmd(sweep_dir, "hydra.sweeper.n_trials=4", "optimizer.lr=0.01,0.001", "model.fc1_size=50,100")
    procs = [subprocess.Popen([sys.executable, "-m", *cmd], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()[-2000:]
    with sqlite3.connect(sweep_dir / "optuna.db") as db:
        workers = db.execute("select distinct value_json from trial_system_attributes where key='fmnist:worker'")
        assert len(workers.fetchall()) == 2, "both workers ran trials"
    rows = read_rows(sweep_dir / "summary.csv")
    assert len(rows) == 4 and all(r["state"] == "COMPLETE" for r in rows)
    assert len({(r["lr"], r["fc1_size"]) for r in rows}) == 4  # no grid point lost or run twice


def test_default_sweep_folder_and_storage(tmp_path, data_root):
    """No dirs given: the sweep lands in ./outputs/sweeps/<study_name>/ with an absolute sqlite storage there."""
    run_cli("fmnist.train", "--multirun", *TINY, "hydra.sweeper.study_name=s1", "hydra.sweeper.n_trials=1",
            f"data.root={data_root}", cwd=tmp_path)  # fmt: skip
    sweep_dir = tmp_path / "outputs" / "sweeps" / "s1"
    assert (sweep_dir / "optuna.db").exists() and (sweep_dir / "0" / "summary.json").exists()
    assert json.loads((sweep_dir / "best.json").read_text())["run_dir"] == str(sweep_dir / "0")
