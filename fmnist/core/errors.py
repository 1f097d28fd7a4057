"""User errors (bad data, configs, checkpoints) and how entry points report them: one line, exit code 1."""

from __future__ import annotations

import functools
import logging
import sys

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

log = logging.getLogger("fmnist")


class UserError(RuntimeError):
    """Something the user can fix; the message says what and how."""


class ConfigError(UserError):
    """A config value out of its type or range; the message names the key and the fix."""


def one_line_errors(fn):
    """Turn a UserError into 'error: ...' and exit 1 in a single run; re-raise it in a multirun, where the sweeper
    records the message as the trial's failure reason and goes on. Anything else is a bug: its traceback stays."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            if _in_multirun():
                raise
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)

    return wrapper


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
