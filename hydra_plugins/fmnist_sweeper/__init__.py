"""Hydra finds sweepers only under the hydra_plugins namespace; the loop itself lives in fmnist/sweep.py."""

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


class FmnistOptunaSweeper(OptunaSweeper):
    """The stock Optuna sweeper (config, search space, samplers) with fmnist's resumable sweep loop."""

    def __init__(self, **kwargs) -> None:
        from fmnist.sweep import ResumableSweeperImpl  # optuna is slow to import: only when sweeping

        self.sweeper = ResumableSweeperImpl(**kwargs)
