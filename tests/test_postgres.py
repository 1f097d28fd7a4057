"""Sweeps on a real PostgreSQL server (a throwaway cluster, tests/postgres.py): several workers on one study, a worker
on another host killed mid-trial, the database going away mid-trial, and a trial that finishes while another worker
declares it stale. Skipped, with the reason, where PostgreSQL is not installed; .ci/run installs it."""

from __future__ import annotations

import json
import os
import signal

import optuna
import pytest

from tests.helpers import read_rows, run_cli, sweep_cmd, wait_for, worker
from tests.postgres import Cluster, missing

# CI installs the server (.ci/run): there a missing one is a failure, not a skip
pytestmark = pytest.mark.skipif(missing() is not None and os.environ.get("CI") != "true", reason=missing() or "")
LIVENESS = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=4"]  # seconds: a dead worker found fast


@pytest.fixture(scope="module")
def pg():
    cluster = Cluster().start()
    yield cluster
    cluster.close()


def _db(pg, request) -> str:
    return pg.create_db(request.node.name.lower()[:60])


def _study(url: str) -> optuna.Study:
    return optuna.load_study(study_name="fmnist-study-grid", storage=url)


def _configs(trials) -> list[tuple]:
    return sorted(tuple(sorted(t.params.items())) for t in trials)


@pytest.mark.slow  # worker processes side by side: timing-sensitive, run alone
def test_three_workers_share_one_postgres_study(pg, request, tmp_path, data_root):
    url = _db(pg, request)
    cmd = sweep_cmd(
        tmp_path / "s",
        f"hydra.sweeper.storage='{url}'",
        "hydra.sweeper.n_trials=6",
        "optimizer.lr=0.01,0.001",
        "model.fc1_size=50,100",
        "model.conv1_channels=8,12",
    )
    procs = [worker(cmd) for _ in range(3)]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()[-2000:]
    trials = _study(url).get_trials()
    assert len(trials) == 6 and all(t.state.is_finished() for t in trials)  # n_trials reached, nothing lost
    assert len(set(_configs(trials))) == 6  # no configuration trained twice
    assert len({t.system_attrs["fmnist:worker"] for t in trials}) == 3  # all three workers ran trials
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["workers"] == 3


@pytest.mark.slow  # real heartbeats and a grace period: timing-sensitive, run alone
def test_a_worker_killed_on_another_host_is_failed_after_the_grace_period_and_its_trial_runs_again(
    pg, request, tmp_path, data_root
):
    url = _db(pg, request)
    # no pruner: the other host's trial cannot end after its first epoch, before the kill lands
    cmd = sweep_cmd(
        tmp_path / "s",
        f"hydra.sweeper.storage='{url}'",
        "hydra.sweeper.n_trials=3",
        *LIVENESS,
        "optimizer.lr=0.01,0.001",
        "model.fc1_size=50,100",
        "trainer.max_epochs=5",
        "hydra/sweeper/pruner=none",
    )
    remote, local = worker(cmd, host="otherhost"), worker(cmd)

    def remote_trial():
        try:
            running = _study(url).get_trials(states=(optuna.trial.TrialState.RUNNING,))
        except KeyError:  # the study is not created yet
            return None
        return next((t for t in running if t.system_attrs.get("fmnist:worker", "").startswith("otherhost:")), None)

    seen = {}  # the trial as found running: asked again after the wait, it may have ended meanwhile

    def one_epoch_done() -> bool:
        seen["trial"] = remote_trial()
        return bool(seen["trial"]) and (tmp_path / "s" / str(seen["trial"].number) / "metrics.csv").exists()

    wait_for(one_epoch_done, what="the other host's trial to finish an epoch")
    killed = seen["trial"]
    remote.send_signal(signal.SIGKILL)  # kill -9 in the middle of its trial: no heartbeat from now on
    remote.wait()
    assert local.wait(timeout=600) == 0, local.stderr.read()[-2000:]

    trials = _study(url).get_trials()
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert trials[killed.number].state == optuna.trial.TrialState.FAIL
    rerun = [t for t in trials if killed.number in t.system_attrs.get("retry_history", [])]
    assert len(rerun) == 1 and rerun[0].state.is_finished() and rerun[0].params == killed.params
    assert len([t for t in trials if t.number != killed.number]) == 3  # n_trials finished, the stale one not counted
    rows = {int(r["trial"]): r for r in read_rows(tmp_path / "s" / "summary.csv")}
    assert rows[killed.number]["reason"].startswith("stale: no heartbeat from its worker otherhost:")
    assert f"runs again as trial {rerun[0].number}" in rows[killed.number]["reason"]
    # the killed worker's span was written while it ran (extended at every beat), so the summary counts it
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["workers"] == 2


@pytest.mark.slow  # a server stopped under a running worker: timing-sensitive
def test_the_database_going_away_mid_trial_stops_the_worker_in_one_line_and_a_rerun_resumes(
    pg, request, tmp_path, data_root
):
    url = _db(pg, request)
    cmd = sweep_cmd(
        tmp_path / "s",
        f"hydra.sweeper.storage='{url}'",
        "hydra.sweeper.n_trials=2",
        *LIVENESS,
        "optimizer.lr=0.01,0.001",
        "trainer.max_epochs=3",
    )
    sweeping = worker(cmd)
    wait_for(lambda: (tmp_path / "s" / "0" / "metrics.csv").exists(), what="trial 0's first epoch")
    pg.stop()
    try:
        assert sweeping.wait(timeout=300) == 1
        stderr = sweeping.stderr.read()
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and f"127.0.0.1:{pg.port}" in last and "rerun" in last, stderr[-2000:]
        assert "Traceback" not in stderr
    finally:
        pg.start()
    assert _study(url).get_trials()[0].state == optuna.trial.TrialState.RUNNING  # left as the worker died
    run_cli(*cmd)  # the same command, once the server is back
    trials = _study(url).get_trials()
    assert trials[0].state == optuna.trial.TrialState.FAIL and not [t for t in trials if not t.state.is_finished()]
    assert sorted(t.params["optimizer.lr"] for t in trials[1:]) == [0.001, 0.01]  # both configurations ran


def test_a_restarted_database_is_reconnected(pg, request):
    from fmnist.search.storage import open_storage

    study = optuna.create_study(storage=open_storage(_db(pg, request)))
    study.tell(study.ask(), 1.0)
    pg.restart()  # every pooled connection dies; the next query checks its connection first and opens a new one
    study.tell(study.ask(), 2.0)
    assert [t.value for t in study.get_trials()] == [1.0, 2.0]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # a plain ask() on a heartbeat storage
def test_a_trial_its_worker_finishes_while_another_declares_it_stale_stays_finished(pg, request):
    from fmnist.search import liveness
    from fmnist.search.storage import open_storage
    from fmnist.search.trials import stale_reasons

    storage = open_storage(_db(pg, request), heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, direction="maximize")
    trial = study.ask({"x": optuna.distributions.CategoricalDistribution([1, 2])})
    storage.record_heartbeat(trial._trial_id)
    wait_for(lambda: liveness.stale_trials(study), timeout=30, what="the heartbeat to age")
    stale = liveness.stale_trials(study)  # another worker has just found it stale...
    study.tell(trial, 0.9)  # ...and its own worker finishes it before that worker fails it
    assert [liveness.fail_as_stale(study, trial_id, why) for trial_id, why in stale.items()] == [False]
    trials = study.get_trials()
    assert [(t.state, t.value) for t in trials] == [(optuna.trial.TrialState.COMPLETE, 0.9)]  # nothing queued again
    assert liveness.stale_numbers(study) == set() and stale_reasons(study) == {}
