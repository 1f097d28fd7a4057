"""fmnist.search.optuna_glue holds every private API of hydra-optuna-sweeper and Optuna that fmnist uses: these tests
break loudly when a new release of either moves one of them."""

import subprocess
import sys
from importlib.metadata import version

import optuna
import pytest
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_optuna_sweeper import _impl as plugin

from fmnist.search import optuna_glue


def test_pinned_versions():
    assert version("hydra-optuna-sweeper") == optuna_glue.PINNED["hydra-optuna-sweeper"]
    assert version("optuna").startswith(optuna_glue.PINNED["optuna"])


def test_private_names_still_exist():
    for name in (
        "_process_searchspace_config",
        "_parse_sweeper_params_config",
        "_to_grid_sampler_choices",
        "_configure_trials",
    ):
        assert callable(getattr(plugin.OptunaSweeperImpl, name)), name
    assert callable(plugin.create_params_from_overrides)
    assert "_return_value" in JobReturn.__dataclass_fields__
    study = optuna.create_study()
    trial = study.ask()
    storage = optuna_glue.storage_of(study)
    assert storage.get_trial_id_from_study_id_trial_number(study._study_id, 0) == optuna_glue.trial_id(trial)
    assert optuna_glue.trial_of(study, 0).number == 0


_BRACKETS = """
import optuna
pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=40, reduction_factor=3)
study = optuna.create_study(study_name="s", pruner=pruner, direction="maximize")
for _ in range(8):
    t = study.ask(); t.report(0.5, 1); t.should_prune()
print([pruner._get_bracket_id(study, t) for t in study.get_trials()])
"""


def test_hyperband_brackets_agree_across_processes():
    """The job and the sweeper must agree on a trial's bracket: Optuna 2.10 salted it with the per-process hash()
    (fmnist carried a subclass for it); since 3.1 the stock pruner uses crc32, which this shows."""
    out = [
        subprocess.run(
            [sys.executable, "-c", _BRACKETS], env={"PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True
        ).stdout
        for seed in ("1", "2")
    ]
    assert out[0] == out[1] and len(set(eval(out[0]))) > 1  # the same brackets, and more than one in use


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # a plain ask() on a heartbeat storage
def test_heartbeat_touches_still_work(tmp_path):
    """fmnist fails stale trials one by one (fmnist/search/liveness.py) from Optuna's private list of them."""
    import time

    from fmnist.search.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage)
    assert optuna_glue.heartbeat_enabled(optuna_glue.storage_of(study))
    assert not optuna_glue.heartbeat_enabled(optuna_glue.storage_of(optuna.create_study()))  # in memory: none
    trial = study.ask()
    storage.record_heartbeat(optuna_glue.trial_id(trial))
    assert optuna_glue.stale_trial_ids(study) == []
    time.sleep(2.5)  # sqlite's clock counts whole seconds
    assert optuna_glue.stale_trial_ids(study) == [optuna_glue.trial_id(trial)]
