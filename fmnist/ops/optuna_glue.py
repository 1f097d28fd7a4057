"""Every touch of hydra-optuna-sweeper's and Optuna's private API, in one place.

fmnist pins hydra-optuna-sweeper 1.3.0 (which caps optuna < 3) and builds on it where its public surface stops:
the sweep loop reuses the plugin's search-space parsing and trial configuration, and a job reaches its own trial
through the study's storage (hydra issue #1954: a launched job has no channel back to the sweeper). Each function
below names the private attribute it uses; tests/test_optuna_glue.py fails loudly if a new plugin or Optuna release
moves one of them.
"""

from __future__ import annotations

import binascii

import optuna
from hydra_plugins.hydra_optuna_sweeper import _impl as plugin
from optuna.pruners import HyperbandPruner

PINNED = {"hydra-optuna-sweeper": "1.3.0", "optuna": "2.10."}  # what this module was written against


def search_space(impl: plugin.OptunaSweeperImpl, arguments: list[str]) -> tuple[dict, dict]:
    """(distributions, fixed values) of the sweep: the config's params and search_space, then the command line's
    ranges, which replace the config's for the same key; a fixed value removes its key from the search."""
    impl._process_searchspace_config()  # fills impl.search_space_distributions from `search_space`
    distributions, fixed = plugin.create_params_from_overrides(impl._parse_sweeper_params_config() + list(arguments))
    distributions = {**(impl.search_space_distributions or {}), **distributions}
    for name in fixed:
        distributions.pop(name, None)
    return distributions, fixed


def grid_choices(impl: plugin.OptunaSweeperImpl, distribution) -> list:
    return impl._to_grid_sampler_choices(distribution)


def trial_overrides(impl: plugin.OptunaSweeperImpl, trials, distributions: dict, fixed: dict) -> list:
    """The Hydra overrides of each trial: its sampled values and the fixed ones."""
    return impl._configure_trials(trials, distributions, fixed)


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


class StableHyperbandPruner(HyperbandPruner):
    """Optuna 2.10's HyperbandPruner with a bracket per trial that every process agrees on.

    2.10 picks a trial's bracket with Python's `hash()` of a string, which is salted per process (PYTHONHASHSEED):
    the job that asks `should_prune`, the sweeper's TPE sampler and a resumed sweep would each put the same trial in
    another bracket. Optuna 3 switched to crc32; this does the same."""

    def _get_bracket_id(self, study, trial) -> int:
        if len(self._pruners) == 0:
            return 0
        n = binascii.crc32(f"{study.study_name}_{trial.number}".encode()) % self._total_trial_allocation_budget
        for bracket_id in range(self._n_brackets):
            n -= self._trial_allocation_budgets[bracket_id]
            if n < 0:
                return bracket_id
        raise AssertionError("unreachable: the budgets sum to the total")
