"""Phased reward schedules: which reward functions are active, with which weights, from which step.

MUSEG's "phased" recipe is two separate runs (stage 1: ``format`` + ``segment_matching``; stage 2:
``format_no_timestamp`` + ``segment_matching``), each a one-phase schedule here; a schedule can also
switch phases inside one run (``start_step``). Total reward = sum of weight * reward over the active
phase (MUSEG: every weight 1). Weights are plain config keys, so Hydra sweeps them:
``-m reward.phases.main.weights.segment_matching=0.5,1.0``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from museg_lit.rewards import resolve_reward


@dataclass(frozen=True)
class RewardPhase:
    name: str
    start_step: int
    weights: dict[str, float]


@dataclass(frozen=True)
class RewardOutput:
    total: Tensor  # [N] weighted sum over the active phase
    per_function: dict[str, Tensor]  # name -> [N] unweighted rewards of the active functions
    phase: RewardPhase

    def select(self, rows: Tensor) -> RewardOutput:
        """The rows ``rows`` (bool ``[N]`` or indices) of every reward."""
        return RewardOutput(self.total[rows], {k: v[rows] for k, v in self.per_function.items()}, self.phase)


class RewardSchedule:
    """A list of phases, sorted by ``start_step``; the phase with the largest start <= step is active.

    ``phases``: ``{name: {"start_step": int, "weights": {reward_name: weight}}}``.
    ``custom``: ``{reward_name: "package.module:function"}`` for rewards outside the registry, or
    callables directly (Python API).
    """

    def __init__(self, phases: Mapping[str, Mapping], custom: Mapping[str, str | Callable] | None = None):
        if not phases:
            raise ValueError("reward.phases is empty: give at least one phase with weights")
        self.phases = sorted(
            (RewardPhase(name, int(p.get("start_step", 0)), {k: float(v) for k, v in dict(p["weights"]).items()})
             for name, p in phases.items()),
            key=lambda p: p.start_step,
        )
        if self.phases[0].start_step != 0:
            raise ValueError(f"reward.phases: the first phase ({self.phases[0].name}) must start at step 0")
        custom = dict(custom or {})
        self.functions: dict[str, Callable] = {}
        for phase in self.phases:
            for name in phase.weights:
                if name in self.functions:
                    continue
                spec = custom.get(name, name)
                try:
                    self.functions[name] = spec if callable(spec) else resolve_reward(spec)
                except ValueError as exc:
                    raise ValueError(f"reward.phases.{phase.name}.weights.{name}: {exc}") from None

    def active(self, step: int) -> RewardPhase:
        current = self.phases[0]
        for phase in self.phases:
            if phase.start_step <= step:
                current = phase
        return current

    def compute(self, step: int, completions: list[str], solution: list, **columns) -> RewardOutput:
        """Score ``completions`` (one row per completion; ``solution``/``columns`` aligned to them)."""
        phase = self.active(step)
        n = len(completions)
        total = torch.zeros(n, dtype=torch.float32)
        per_fn: dict[str, Tensor] = {}
        for name, weight in phase.weights.items():
            values = torch.tensor(self.functions[name](completions, solution, **columns), dtype=torch.float32)  # [N]
            if values.shape != (n,):
                raise ValueError(f"reward {name!r} returned {tuple(values.shape)} values for {n} completions")
            per_fn[name] = values
            total += weight * values
        return RewardOutput(total, per_fn, phase)
