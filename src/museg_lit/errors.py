"""User errors: a config value to change, or a file to fix. Entry points print them as one line,
``error: <where>: <what>``, and exit with status 2; tracebacks are for real bugs."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

USER_ERROR_EXIT = 2


class ConfigError(ValueError):
    """A config value (or combination) that cannot work; the message names the key(s)."""


class DataError(ValueError):
    """Input data that cannot train: videos missing under ``data.video_root``, too many samples
    skipped (``data.max_skip_fraction``), a broken video under ``data.on_error=raise``. The
    message names the files."""


def user_error_of(exc: BaseException, kinds: tuple[type[BaseException], ...] = ()) -> BaseException | None:
    """The user error behind ``exc``: ``exc`` itself when it is a ``ConfigError``, a ``DataError`` or one of ``kinds``,
    or the ``ConfigError`` a Hydra ``InstantiationException`` wraps (typed configs check their values
    when built); else None (a bug)."""
    if isinstance(exc, (ConfigError, DataError, *kinds)):
        return exc
    cause = exc.__cause__
    if type(exc).__name__ == "InstantiationException" and isinstance(cause, ConfigError):
        return cause
    return None


def exit_with(exc: BaseException) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit with status 2."""
    print(f"error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(USER_ERROR_EXIT)


@contextmanager
def user_errors(*kinds: type[BaseException]) -> Iterator[None]:
    """Inside, a user error (:func:`user_error_of`) ends the program with one line and status 2;
    anything else propagates with its traceback."""
    try:
        yield
    except Exception as exc:
        if (cause := user_error_of(exc, kinds)) is None:
            raise
        exit_with(cause)
