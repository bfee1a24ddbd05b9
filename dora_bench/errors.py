"""Errors a user can fix. The CLI prints them as one line and exits with status 2."""


class UserError(Exception):
    """Bad input: the message names the problem and the fix, in one line."""

    exit_code = 2


class ConfigError(UserError):
    """A configuration value that can't work (unknown name, budget < 1, missing path...)."""


class DataError(UserError):
    """A data file that can't be read as the task expects (names file and line)."""


class OfflineError(UserError):
    """A model or tokenizer that is neither cached nor reachable."""


class TrainingDiverged(UserError):
    """The loss or the gradient norm stopped being finite: the run stops there (a sweep goes on)."""


class RunSkipped(UserError):
    """Not an error for a sweep: the run is done or under way elsewhere; the CLI says why and exits 0."""


class RecordExistsError(RunSkipped):
    """A complete record is already on disk and `overwrite=true` was not given."""


class RunInProgressError(RunSkipped):
    """Another process holds the run's claim (a parallel sweep named the same run twice)."""


def first_line(err: BaseException) -> str:
    """The first informative line of an error, looking through wrappers (Hydra's) to the cause."""
    while not str(err).strip() and err.__cause__ is not None:
        err = err.__cause__
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
