"""The one exception type for bad input or configuration, and how a pipeline reports it: one line
on stderr (`icc: error: ...`) and exit code 2, without a traceback (also for a config value
marked ??? that was not given)."""

import contextlib
import sys


class ICCError(ValueError):
    """Bad input or configuration: the message is shown to the user as is, without a traceback."""


@contextlib.contextmanager
def user_errors():
    """Turn ICCError (raised here or inside a Ray task or actor) and a failure of a Ray Data read
    task (a file that cannot be parsed) into one line on stderr and exit code 2, without a traceback."""
    try:
        yield
    except Exception as e:
        message = _user_error_message(e)
        if message is None:
            raise
        print(f"icc: error: {message}", file=sys.stderr)
        sys.exit(2)


def _user_error_message(error: Exception) -> str | None:
    if isinstance(error, ICCError):  # a RayTaskError wrapping an ICCError is an ICCError too
        return root_message(error)
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(error, MissingMandatoryValue):  # a config value written as ??? was not given
        return f"give {error.full_key}=<value>: it has no default"
    from ray.exceptions import RayTaskError

    # The first line names the task's process after Ray Data's operators: "ray::ReadCSV->MapBatches(...)".
    if isinstance(error, RayTaskError) and "ray::Read" in str(error).lstrip().split("\n", 1)[0]:
        return f"cannot read the input data: {root_message(error)}"
    return None


def root_message(error: BaseException) -> str:
    """The first line of `error`'s message; for a Ray task error, of the exception raised in the task."""
    while isinstance(getattr(error, "cause", None), BaseException) and error.cause is not error:
        error = error.cause
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
