"""Hydra finds sweepers only under the hydra_plugins namespace; the loop itself lives in fmnist/search/sweeper.py.

Registers `hydra/sweeper: fmnist_optuna`: the stock Optuna sweeper's config plus `pruner`, a config group of its own
(`hydra/sweeper/pruner=none|median|asha|hyperband`, YAML in conf/hydra/sweeper/pruner/)."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import MISSING


@dataclass
class FmnistOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.fmnist_sweeper.FmnistOptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    # an Optuna pruner (built by Hydra from its _target_); each trial reports its objective after every epoch
    pruner: Any = MISSING  # MISSING, not None: the group's choice is merged before this node and must survive it
    # liveness across machines (fmnist/search/liveness.py): each worker writes a heartbeat per running trial every
    # heartbeat_interval seconds (null: none; a dead worker is then found only on its own host); a trial without one
    # for grace_period seconds (null: twice the interval) is failed and its configuration runs again
    heartbeat_interval: int | None = 30
    grace_period: int | None = 120


ConfigStore.instance().store(
    group="hydra/sweeper", name="fmnist_optuna", node=FmnistOptunaSweeperConf, provider="fmnist"
)


class FmnistOptunaSweeper(OptunaSweeper):
    """The stock Optuna sweeper (config, search space, samplers) with fmnist's resumable, pruning sweep loop."""

    def __init__(self, pruner: Any, heartbeat_interval: int | None, grace_period: int | None, **kwargs) -> None:
        # it imports optuna, slow: Hydra loads plugins in every run
        from fmnist.search.sweeper import ResumableSweeperImpl

        self.sweeper = ResumableSweeperImpl(
            pruner=pruner, heartbeat_interval=heartbeat_interval, grace_period=grace_period, **kwargs
        )
