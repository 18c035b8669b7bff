"""Reward functions (pure) and their registry.

Every reward has the TRL-style signature
``fn(completions: list[str], solution: list[list[list[float]]], **columns) -> list[float]``:
one float per completion; ``columns`` carries the other annotation fields as aligned lists
(``duration``, ``task``, ...) and unknown ones are ignored.

Registered names (``REWARDS``):

- ``format`` / ``format_no_timestamp``: MUSEG stage-1 / stage-2 format rewards (``museg.py``);
- ``global_matching`` / ``local_matching`` / ``segment_matching``: MUSEG segment matching;
- ``iou`` / ``cendist``: LongVTG-R1 single-segment IoU and Center Distance (``longvtg.py``,
  a reconstruction: LongVTG-R1 has no public code).

``resolve_reward`` turns a config string into a function: a registered name, or a dotted path
``"pkg.module:fn"`` / ``"pkg.module.fn"`` for user rewards.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from museg_lit.rewards.longvtg import cendist_reward, iou_reward
from museg_lit.rewards.museg import (
    format_no_timestamp_reward,
    format_reward,
    global_matching_reward,
    local_matching_reward,
    segment_matching_reward,
)

__all__ = ["REWARDS", "RewardFn", "resolve_reward"]

RewardFn = Callable[..., list[float]]

REWARDS: dict[str, RewardFn] = {
    "format": format_reward,
    "format_no_timestamp": format_no_timestamp_reward,
    "global_matching": global_matching_reward,
    "local_matching": local_matching_reward,
    "segment_matching": segment_matching_reward,
    "iou": iou_reward,
    "cendist": cendist_reward,
}


def resolve_reward(name_or_dotted_path: str) -> RewardFn:
    """A registered reward by name, else import ``"pkg.module:fn"`` or ``"pkg.module.fn"``.

    Raises ``ValueError`` naming the key when it is neither registered nor importable, or when the
    imported object is not callable.

    >>> resolve_reward("segment_matching").__name__
    'segment_matching_reward'
    >>> resolve_reward("museg_lit.rewards.longvtg:iou_reward").__name__
    'iou_reward'
    """
    key = name_or_dotted_path
    if not isinstance(key, str) or not key:
        raise ValueError(f"reward key must be a non-empty string, got {key!r}")
    if key in REWARDS:
        return REWARDS[key]
    if ":" in key:
        module_name, _, attr_path = key.partition(":")
    elif "." in key:
        module_name, _, attr_path = key.rpartition(".")
    else:
        raise ValueError(
            f"unknown reward {key!r}: not one of {sorted(REWARDS)} and not a dotted path 'pkg.module:fn'"
        )
    if not module_name or not attr_path:
        raise ValueError(f"reward {key!r}: expected 'pkg.module:fn' or 'pkg.module.fn'")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"reward {key!r}: cannot import module {module_name!r} ({exc})") from None
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"reward {key!r}: {module_name!r} has no attribute {attr_path!r}") from None
    if not callable(obj):
        raise ValueError(f"reward {key!r} resolves to {type(obj).__name__}, which is not callable")
    return obj
