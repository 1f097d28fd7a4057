"""Every touch of hydra-optuna-sweeper's and Optuna's private API, in one place.

fmnist pins hydra-optuna-sweeper 1.4.0.dev10 (optuna >= 4.9, < 5) and builds on it where its public surface stops:
the sweep loop reuses the plugin's search-space parsing and trial configuration, and a job reaches its own trial
through the study's storage (hydra issue #1954: a launched job has no channel back to the sweeper). Each function
below names the private attribute it uses; tests/test_optuna_glue.py fails loudly if a new plugin or Optuna release
moves one of them.
"""

from __future__ import annotations

import optuna
from hydra_plugins.hydra_optuna_sweeper import _impl as plugin

PINNED = {"hydra-optuna-sweeper": "1.4.0.dev10", "optuna": "4.9."}  # what this module was written against


def search_space(impl: plugin.OptunaSweeperImpl, arguments: list[str]) -> tuple[dict, dict, list]:
    """(distributions, fixed values, fixed overrides such as `~key`) of the sweep: the config's params, then the
    command line's, which replace the config's for the same key; a fixed value removes its key from the search."""
    impl._process_searchspace_config()  # params: None -> {}
    parsed = plugin.create_params_from_overrides(impl._parse_sweeper_params_config() + list(arguments))
    distributions, fixed, fixed_overrides = parsed
    for name in fixed:
        distributions.pop(name, None)
    return distributions, fixed, fixed_overrides


def distributions(params: dict) -> dict:
    """The Optuna distributions of a sweeper `params` mapping as the config writes it (`key: choice(3, 5)`)."""
    return plugin.create_params_from_overrides([f"{k}={v}" for k, v in params.items()])[0]


def grid_choices(impl: plugin.OptunaSweeperImpl, distribution) -> list:
    return impl._to_grid_sampler_choices(distribution)


def trial_overrides(
    impl: plugin.OptunaSweeperImpl, trials, distributions: dict, fixed: dict, fixed_overrides: list
) -> list:
    """The Hydra overrides of each trial: its sampled values and the fixed ones."""
    return impl._configure_trials(trials, distributions, fixed, fixed_overrides)


def storage_of(study: optuna.Study):
    return study._storage


def trial_id(trial) -> int:
    return trial._trial_id


def job_exception(ret) -> BaseException:
    """A failed job's exception (reading JobReturn.return_value would re-raise it)."""
    return ret._return_value


def trial_of(study: optuna.Study, number: int) -> optuna.Trial:
    """The live trial `number` of a study loaded from its storage, in another process than the one that asked it."""
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.Trial(study, trial_id)


def stale_trial_ids(study: optuna.Study) -> list[int]:
    """RUNNING trials whose last heartbeat is older than the storage's grace period, by the database's clock (the
    public optuna.storages.fail_stale_trials fails them at once; fmnist fails them one by one, see
    fmnist/search/liveness.py)."""
    return study._storage._get_stale_trial_ids(study._study_id)


def heartbeat_enabled(storage) -> bool:
    """Whether the storage keeps heartbeats (an RDBStorage given heartbeat_interval; not JournalStorage)."""
    from optuna.storages._heartbeat import is_heartbeat_enabled  # private module: only here, with the other touches

    return is_heartbeat_enabled(storage)
