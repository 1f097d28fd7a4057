import json
import math
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from fmnist.core import checkpoint, runs
from fmnist.core.errors import ConfigError
from fmnist.train import main, metric_value
from fmnist.training.run import train
from tests.helpers import REPO, SMALL, read_rows, run_cli, small_cfg

THREADS = "trainer.threads=2"


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("two_epochs")
    # threads pinned: torch's thread count is process-wide, an earlier test in this worker may have set another, and
    # another count sums in another order (other metrics); the resume test's subprocesses run with the same count
    return out, train(small_cfg(out, "trainer.max_epochs=2", THREADS))


def test_training_writes_files_and_learns(two_epochs):
    out, summary = two_epochs
    rows = read_rows(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for col in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy"):
        assert all(math.isfinite(float(r[col])) for r in rows)
    # each epoch on the clock: the second ended at least its own length after the first, both before the test ran on
    ended = [float(r["ended_at"]) for r in rows]
    assert ended[1] - ended[0] >= float(rows[1]["epoch_seconds"]) > 0 and ended[1] <= time.time()
    assert summary["status"] == "completed" and summary["epochs_run"] == 2
    assert summary["best"]["test_accuracy"] > 0.6  # chance is 0.1; 5 000 images x 2 epochs already reach ~0.75
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["best"] == summary["best"] and on_disk["params"] == 120 + 4_816 + 774_500 + 1_010
    best_row = max(rows, key=lambda r: float(r["val_accuracy"]))
    assert on_disk["best"]["epoch"] == int(best_row["epoch"])


def test_checkpoints_load_weights_only_and_reproduce_metrics(two_epochs, data_root):
    out, summary = two_epochs
    model, ckpt = checkpoint.load_model(out / "checkpoints" / "best.pt")  # weights_only=True inside
    assert ckpt["epoch"] == summary["best"]["epoch"] and ckpt["arch"]["conv1_channels"] == 12
    from fmnist.core.data import load_splits
    from fmnist.training.loop import evaluate

    data = load_splits(small_cfg(out).data)
    # in the precision the run measured it in: auto picks bf16 on a CPU with native bf16, and bf16 logits differ
    _, test_acc = evaluate(model, data.test_x, data.test_y, 1000, precision=summary["precision"]["used"])
    assert test_acc == pytest.approx(summary["best"]["test_accuracy"], abs=1e-6)
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and len(last["history"]) == 2 and "optimizer" in last and "rng" in last


def test_same_seed_same_metrics(two_epochs, tmp_path):
    _, first = two_epochs
    again = train(small_cfg(tmp_path, "trainer.max_epochs=2", THREADS))
    assert again["best"] == first["best"] and again["last"]["val_loss"] == first["last"]["val_loss"]


def test_killed_run_resumes_to_the_same_metrics(two_epochs, tmp_path):
    """kill -9 after the first epoch, rerun the documented resume command, compare with the uninterrupted run."""
    run_dir = tmp_path / "run"
    _, uninterrupted = two_epochs
    # the precision the uninterrupted run used: auto times fp32 against bf16 on a CPU with native bf16, and this
    # process's timing, under the other test worker's load, may choose otherwise (other arithmetic, other metrics)
    args = [
        "fmnist.train",
        *SMALL,
        "trainer.max_epochs=2",
        THREADS,
        f"trainer.precision={uninterrupted['precision']['used']}",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    metrics = run_dir / "metrics.csv"
    deadline = time.time() + 300
    while not (metrics.exists() and len(read_rows(metrics)) == 1) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(read_rows(metrics)) == 1, "the run should have been killed during its second epoch"
    run_cli(*args)  # the same command again: trainer.resume=true continues from checkpoints/last.pt
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert [int(r["epoch"]) for r in read_rows(metrics)] == [1, 2]
    assert (
        resumed["best"] == uninterrupted["best"] and resumed["last"]["test_loss"] == uninterrupted["last"]["test_loss"]
    )


def test_a_run_whose_folder_is_taken_over_stops_before_writing(tmp_path, data_root):
    """A sweep reruns a trial it found dead in that trial's folder; if the old run is alive after all, the later claim
    wins: the old run stops at its next write, and the two never interleave one folder's checkpoints and metrics."""

    def rerun_claims(epoch, row):  # after epoch 1 another process claims the folder, as a rerun's train() does
        runs.claim(tmp_path)

    with pytest.raises(runs.FolderTaken, match="was taken over by .*: this run stops without writing"):
        train(small_cfg(tmp_path, "trainer.max_epochs=3", THREADS), should_stop=rerun_claims)
    assert [int(r["epoch"]) for r in read_rows(tmp_path / "metrics.csv")] == [1]  # epoch 2 was not written
    assert checkpoint.load(tmp_path / "checkpoints" / "last.pt")["epoch"] == 1
    assert not (tmp_path / "summary.json").exists()
    resumed = train(small_cfg(tmp_path, "trainer.max_epochs=3", THREADS))  # the rerun continues from last.pt
    assert [int(r["epoch"]) for r in read_rows(tmp_path / "metrics.csv")] == [1, 2, 3] and resumed["epochs_run"] == 3


def test_resume_refuses_another_architecture(two_epochs, tmp_path):
    out, _ = two_epochs
    before = (out / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(RuntimeError, match="holds architecture .* but the config asks for"):
        train(small_cfg(out, "trainer.max_epochs=3", "model.fc1_size=50"))
    assert (out / "checkpoints" / "last.pt").read_bytes() == before  # nothing already written is lost


def test_resume_on_another_thread_count_says_so(two_epochs, tmp_path, caplog):
    out, _ = two_epochs
    shutil.copytree(out / "checkpoints", tmp_path / "checkpoints")
    summary = train(small_cfg(tmp_path, "trainer.max_epochs=3", "trainer.threads=1"))
    assert summary["epochs_run"] == 3
    assert "trained on 2 threads, this process runs 1" in caplog.text and "trainer.threads=2" in caplog.text


def test_diverging_run_stops_early(tmp_path, data_root):
    summary = train(small_cfg(tmp_path, "trainer.max_epochs=5", "optimizer.lr=50"))
    assert summary["status"] == "diverged" and summary["epochs_run"] < 5
    assert "training loss became" in summary["reason"]
    assert math.isnan(metric_value(summary, "val_accuracy"))  # the sweep records it as pruned, never as a score


def test_impossible_model_fails_before_data(tmp_path):
    # data.root is empty and nothing may be fetched: the model error must come first
    cfg = small_cfg(
        tmp_path, "model.conv1_kernel=25", f"data.root={tmp_path}", "data.system_dir=null", "data.download=false"
    )
    with pytest.raises(ConfigError, match="leave no feature map"):
        train(cfg)


def test_cli_errors_are_one_line(tmp_path):
    bad_model = run_cli("fmnist.train", *SMALL, "model.conv2_kernel=30", f"hydra.run.dir={tmp_path}/a", check=False)
    assert bad_model.returncode == 1
    assert bad_model.stderr.strip().splitlines()[-1].startswith("error: model.conv1_kernel=3 and model.conv2_kernel=30")
    no_data = run_cli(
        "fmnist.train",
        *SMALL,
        f"data.root={tmp_path}/empty",
        "data.system_dir=null",
        "data.download=false",
        f"hydra.run.dir={tmp_path}/b",
        check=False,
    )
    assert no_data.returncode == 1 and "has no Fashion-MNIST files: install dataset-fashion-mnist" in no_data.stderr
    unknown = run_cli("fmnist.train", "model.depth=3", check=False)
    assert unknown.returncode == 1 and "Could not override 'model.depth'" in unknown.stderr
    bad_metric = run_cli("fmnist.train", *SMALL, "optimized_metric=f1", f"hydra.run.dir={tmp_path}/c", check=False)
    assert bad_metric.returncode == 1 and "optimized_metric='f1': use one of train_loss" in bad_metric.stderr


def test_main_returns_best_val_accuracy(tmp_path, data_root):
    cfg = small_cfg(tmp_path)
    value = main(cfg)  # @hydra.main passes a given config straight to the function
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert value == summary["best"]["val_accuracy"] > 0.5


def test_bad_checkpoints_are_reported(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint" * 100)
    with pytest.raises(checkpoint.CheckpointError, match="is unreadable"):
        checkpoint.load(junk)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(checkpoint.CheckpointError, match="not an fmnist checkpoint"):
        checkpoint.load(tmp_path / "foreign.pt")


def test_wandb_offline_writes_run_files(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(small_cfg(tmp_path, "logger=wandb", "logger.mode=offline", "data.subset=2000", "data.val_size=500"))
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))


def test_run_stuck_at_chance_stops_as_diverged(tmp_path, data_root):
    summary = train(small_cfg(tmp_path, "trainer.max_epochs=5", "optimizer.lr=1e-12", "data.subset=3000"))
    assert summary["status"] == "diverged" and summary["epochs_run"] == 1  # epoch 2 at chance: stopped there
    assert summary["reason"].endswith("after 2 epochs: not learning")
