"""User-facing errors.

Every error a user can cause by bad input derives from :class:`UserError`. Hydra prints a
``CompactHydraException`` as its message alone (no traceback) and exits with code 1; with
``HYDRA_FULL_ERROR=1`` it re-raises it with the full traceback. That gives the project's rule for
bad input (one clear line, non-zero exit) without a handler of our own.
"""

import os
import sys
import traceback
from typing import NoReturn

from hydra.errors import CompactHydraException


class UserError(CompactHydraException):
    """Bad input: the message names the bad value and what is allowed."""


class ConfigError(UserError):
    """A configuration value that composes but is not allowed."""


class DeviceError(UserError):
    """The requested device cannot be used on this machine."""


class OutputDirError(UserError):
    """The run or sweep directory cannot be written."""


class CheckpointError(UserError):
    """A checkpoint to resume from is absent, unreadable or does not match the config."""


class TrainingDiverged(UserError):
    """A task loss became NaN or infinite; the run stops and is marked failed."""


def report_and_exit(error: UserError) -> NoReturn:
    """Print ``error`` as one line on stderr and exit with code 1.

    Used where Hydra would add lines of its own (a job's error in a single run) or swallow the
    error (callbacks). With ``HYDRA_FULL_ERROR=1`` the traceback is printed too.
    """
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        traceback.print_exception(error)
    sys.stderr.write(f"mtl-run: error: {error}\n")
    sys.stderr.flush()
    raise SystemExit(1)
