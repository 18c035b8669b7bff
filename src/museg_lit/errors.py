"""User errors that are not about a file: a config value to change. The message names the key and
what to do; entry points print it as one line (``error: ...``) and exit with status 2."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value (or combination) that cannot work; the message names the key(s)."""
