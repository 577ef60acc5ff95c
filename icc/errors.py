"""The one exception type for bad input or configuration, and how a pipeline reports it: one line
on stderr (`icc: error: ...`) and exit code 2, without a traceback (also for a config value
marked ??? that was not given, and for a command-line override Hydra cannot apply); a Ray that
died under a stage, as one line naming the stage and exit code 1; and how a pipeline stops on
SIGINT or SIGTERM: at once, with exit code 128 + the signal (130, 143)."""

import contextlib
import difflib
import signal
import sys

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ICCError(ValueError):
    """Bad input or configuration: the message is shown to the user as is, without a traceback."""


class RayDied(Exception):
    """Ray's raylet or a node the run needed died during `stage` (exit code 1, one line)."""

    def __init__(self, stage: str, error: BaseException):
        super().__init__(f"Ray died during stage {stage} ({type(error).__name__}: {root_message(error)})")


class Stopped(BaseException):
    """Raised in the main thread by SIGINT or SIGTERM (a BaseException, like KeyboardInterrupt,
    so that no `except Exception` on the way swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum, frame):
    signal.signal(signum, signal.SIG_DFL)  # a second signal of the same kind kills at once
    raise Stopped(signum)


@contextlib.contextmanager
def user_errors():
    """Turn ICCError (raised here or inside a Ray task or actor), a failure of a Ray Data read task
    (a file that cannot be parsed) and a bad command-line override into one line on stderr and exit
    code 2, without a traceback; and SIGINT / SIGTERM into exit code 130 / 143. What a stopped run
    wrote is what a cut-off run leaves: the next run with the same settings resumes from it."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop)
    try:
        yield
    except Stopped as e:
        print(f"icc: stopped by {e}", file=sys.stderr)
        sys.exit(128 + e.signum)
    except RayDied as e:
        print(f"icc: error: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:
        message = _user_error_message(e)
        if message is None:
            raise
        print(f"icc: error: {message}", file=sys.stderr)
        sys.exit(2)


def _user_error_message(error: Exception) -> str | None:
    if isinstance(error, ICCError):  # a RayTaskError wrapping an ICCError is an ICCError too
        return root_message(error)
    from hydra.errors import CompactHydraException
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(error, MissingMandatoryValue):  # a config value written as ??? was not given
        return f"give {error.full_key}=<value>: it has no default"
    if isinstance(error, CompactHydraException):  # an override Hydra cannot parse or apply
        return _override_message(error)
    from ray.exceptions import RayTaskError

    # The first line names the task's process after Ray Data's operators: "ray::ReadCSV->MapBatches(...)".
    if isinstance(error, RayTaskError) and "ray::Read" in str(error).lstrip().split("\n", 1)[0]:
        return f"cannot read the input data: {root_message(error)}"
    return None


def _override_message(error) -> str:
    """One line for a Hydra composition error; for an unknown key or config option, the closest valid ones."""
    from hydra.errors import MissingConfigException
    from omegaconf import DictConfig

    cause = error.__cause__
    if isinstance(getattr(cause, "parent_node", None), DictConfig) and cause.key is not None:  # "Key 'kk' is not in struct"
        parent = cause.full_key.rpartition(".")[0]
        if parent == "embedder":  # a setting renamed: the new name, not the closest one
            from icc.models.embedder import renamed_key

            if renamed_key(str(cause.key)):
                return renamed_key(str(cause.key))
        choices = [f"{parent}.{key}" if parent else str(key) for key in cause.parent_node]
        return f"unknown key {cause.full_key}{_closest(cause.full_key, choices)}"
    if isinstance(error, MissingConfigException) and error.options:  # a config group option: clusterer=kmean
        return f"{root_message(error)}{_closest(error.missing_cfg_file.rpartition('/')[2], error.options)}"
    return root_message(error)


def _closest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else f" (choose from {', '.join(choices)})"


def root_message(error: BaseException) -> str:
    """The first line of `error`'s message; for a Ray task error, of the exception raised in the task."""
    while isinstance(getattr(error, "cause", None), BaseException) and error.cause is not error:
        error = error.cause
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
