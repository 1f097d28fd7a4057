"""A sweep's storage: what cannot be opened is refused in one line with nothing written over; workers that share only
a file system share one Optuna journal file; optuna-dashboard reads a real sweep back through its HTTP API."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fmnist.core.errors import UserError
from fmnist.search.storage import open_storage
from tests.helpers import read_rows, run_cli, sweep_cmd, worker
from tests.postgres import free_port


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("corrupt", "is not an Optuna storage (file is not a database): point hydra.sweeper.storage at another file"),
        ("foreign", "is an sqlite database but not an Optuna storage (tables: notes)"),
    ],
)
def test_a_file_that_is_not_an_optuna_storage_is_refused_and_left_alone(tmp_path, kind, message):
    db = tmp_path / "optuna.db"
    if kind == "corrupt":
        db.write_bytes(b"not a database " * 100)
    else:
        with sqlite3.connect(db) as con:
            con.execute("create table notes (text)")
    before = db.read_bytes()
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_storage(f"sqlite:///{db}")
    assert db.read_bytes() == before


def test_a_sweep_on_a_corrupt_storage_says_so_in_one_line_before_writing_anything(tmp_path):
    sweep = tmp_path / "s"
    sweep.mkdir()
    (sweep / "optuna.db").write_bytes(b"not a database " * 100)
    proc = run_cli(*sweep_cmd(sweep, "hydra.sweeper.n_trials=1", "optimizer.lr=0.01"), check=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and last.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"{sweep / 'optuna.db'} is not an Optuna storage" in last
    assert (sweep / "optuna.db").read_bytes() == b"not a database " * 100 and not (sweep / "0").exists()


def test_a_server_url_without_its_driver_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as where `pip install -e '.[postgres]'` was not run
    with pytest.raises(UserError, match=r"needs the postgresql driver psycopg, .*pip install -e '\.\[postgres\]'"):
        open_storage("postgresql://fmnist:secret@127.0.0.1:5432/fmnist")


def test_an_unreachable_server_names_its_host_and_port():
    port = free_port()  # nothing listens there
    with pytest.raises(UserError, match=f"cannot reach the study's storage at 127.0.0.1:{port} .*start the server"):
        open_storage(f"postgresql://fmnist:secret@127.0.0.1:{port}/fmnist")


@pytest.fixture(scope="module")
def journal_sweep(tmp_path_factory, data_root):
    """Two workers on one journal file (no database server), 2 epochs a trial, the default ASHA pruner."""
    sweep = tmp_path_factory.mktemp("journal") / "s"
    log = sweep / "optuna.log"
    cmd = sweep_cmd(
        sweep,
        f"hydra.sweeper.storage='journal://{log}'",
        "hydra.sweeper.n_trials=4",
        "trainer.max_epochs=2",
        "optimizer.lr=0.01,0.001",
        "model.fc1_size=50,100",
    )
    procs = [worker(cmd) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()[-2000:]
    return sweep, log


def test_two_workers_share_one_journal_file(journal_sweep):
    sweep, log = journal_sweep
    rows = read_rows(sweep / "summary.csv")
    assert len(rows) == 4 and {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"}
    assert len({(r["lr"], r["fc1_size"]) for r in rows}) == 4  # the whole grid, no point twice
    assert json.loads((sweep / "summary.json").read_text())["workers"] == 2
    assert log.stat().st_size > 0 and not (sweep / "optuna.db").exists()


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_optuna_dashboard_shows_a_real_sweep_with_its_per_epoch_values(journal_sweep):
    sweep, log = journal_sweep
    port = free_port()
    dashboard = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "optuna-dashboard"),
            str(log),
            "--storage-class",
            "JournalFileStorage",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, studies = time.time() + 60, None
        while studies is None:
            try:
                studies = _get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
            except OSError:
                assert dashboard.poll() is None and time.time() < deadline, dashboard.stderr.read()[-2000:]
                time.sleep(0.5)
        (study,) = studies
        trials = _get(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}")["trials"]
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
    rows = {int(r["trial"]): r for r in read_rows(sweep / "summary.csv")}
    assert sorted(t["number"] for t in trials) == sorted(rows)
    for t in trials:  # one intermediate value per epoch trained, in the state the sweep's table gives
        assert t["state"].upper() == rows[t["number"]]["state"]
        assert [v["step"] for v in t["intermediate_values"]] == list(range(1, int(rows[t["number"]]["epochs"]) + 1))
