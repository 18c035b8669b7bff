"""Typed settings: dataclass fields that carry their bounds (:func:`setting`) and the checks that
refuse a bad value with its key named (``rollout.num_generations='abc': expected an integer``).

:func:`check_fields` runs in a settings dataclass's ``__post_init__`` (``AlgoConfig``,
``RolloutConfig``, ``FrameSpec``, ``SFTConfig``), so the object checks itself however it is built;
:func:`check_group` checks a config group against a schema dataclass (:mod:`museg_lit.schema`).
This module imports nothing of the platform, so every settings class can use it.

Types are exact: an int field takes no bool or string, a float field takes ints but no strings,
NaN or infinity; a bool field takes only ``true``/``false``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import field
from typing import Any

from museg_lit.errors import ConfigError

__all__ = ["check_fields", "check_group", "check_value", "setting"]


def setting(default: Any = None, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, choices: Sequence | None = None) -> Any:
    """A dataclass field with bounds: ``batch_size: int = setting(1, ge=1)``."""
    return field(default=default, metadata={"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices})


def _type_error(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{key}={value!r}: expected {expected}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_type(key: str, value: Any, annotation: Any) -> None:
    """Raise unless ``value`` has type ``annotation`` (int, float, bool, str, X | None, list[X], tuple)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _check_type(key, value, option)
            except ConfigError as exc:
                errors.append(exc)
        if len(options) == 1:
            raise errors[0]
        raise _type_error(key, value, " or ".join(getattr(o, "__name__", str(o)) for o in options)
                          + (" or null" if type(None) in args else ""))
    if annotation is Any:
        return
    if annotation is bool:
        if not isinstance(value, bool):
            raise _type_error(key, value, "true or false")
    elif annotation is int:
        if not _is_int(value):
            raise _type_error(key, value, "an integer")
    elif annotation is float:
        if not (_is_int(value) or isinstance(value, float)):
            raise _type_error(key, value, "a number")
        if not math.isfinite(value):
            raise _type_error(key, value, "a finite number")
    elif annotation is str:
        if not isinstance(value, str):
            raise _type_error(key, value, "a string")
    elif origin in (list, tuple, Sequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise _type_error(key, value, "a list")
        inner = args[0] if args else Any
        for i, item in enumerate(value):
            _check_type(f"{key}[{i}]", item, inner)
    elif (origin in (dict, Mapping) or annotation in (dict, Mapping)) and not isinstance(value, Mapping):
        raise _type_error(key, value, "a mapping")


def _range_words(meta: Mapping) -> str:
    """``ge=0, lt=1`` -> ``in [0, 1)``; ``ge=2`` -> ``>= 2``."""
    low = ("[", meta["ge"]) if meta.get("ge") is not None else ("(", meta["gt"]) if meta.get("gt") is not None else None
    high = ("]", meta["le"]) if meta.get("le") is not None else (")", meta["lt"]) if meta.get("lt") is not None else None
    if low and high:
        return f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]:g}"
    return f"{'<=' if high[0] == ']' else '<'} {high[1]:g}"


def _check_bounds(key: str, value: Any, meta: Mapping) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}={value!r}: choose one of {', '.join(dict.fromkeys(map(str, choices)))}")
    if not (_is_int(value) or isinstance(value, float)):
        return
    inside = ((meta.get("ge") is None or value >= meta["ge"]) and (meta.get("gt") is None or value > meta["gt"])
              and (meta.get("le") is None or value <= meta["le"]) and (meta.get("lt") is None or value < meta["lt"]))
    if not inside:
        raise ConfigError(f"{key}={value!r}: must be {_range_words(meta)}")


def check_value(key: str, value: Any, annotation: Any, meta: Mapping | None = None) -> None:
    """Check one value's type, then its bounds; the error names ``key``."""
    _check_type(key, value, annotation)
    if value is not None and meta:
        _check_bounds(key, value, meta)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _takes_float(annotation: Any) -> bool:
    """Whether a field's annotation is ``float`` or ``float | None`` (not ``int | float``)."""
    if annotation is float:
        return True
    args = typing.get_args(annotation)
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and float in args and int not in args


def check_fields(obj: Any, prefix: str) -> None:
    """Check every field of a dataclass instance against its annotation and bounds, then store an int
    given to a float field as a float (``algo.beta=0`` from the command line is ``0.0`` from here
    on, so code downstream sees one type). Works on frozen dataclasses too."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value, annotation = getattr(obj, f.name), hints[f.name]
        check_value(f"{prefix}.{f.name}", value, annotation, f.metadata)
        if _is_int(value) and _takes_float(annotation):
            object.__setattr__(obj, f.name, float(value))


def check_group(values: Mapping | None, schema: type, prefix: str) -> None:
    """Check the keys of ``values`` that ``schema`` declares (others are left alone)."""
    if not values:
        return
    hints = _hints(schema)
    for f in dataclasses.fields(schema):
        if f.name in values:
            check_value(f"{prefix}.{f.name}" if prefix else f.name, values[f.name], hints[f.name], f.metadata)
