"""Typed settings of the SFT warm start (``conf/algo/sft.yaml``, ``algo=sft``)."""

from __future__ import annotations

from dataclasses import dataclass

from museg_lit.settings import check_fields, setting
from museg_lit.sft.answers import THINK_TEMPLATE, target_text


@dataclass(frozen=True)
class SFTConfig:
    """Teacher forcing of :func:`~museg_lit.sft.answers.target_text` on each sample's ground truth.

    ``think_template`` must contain ``{spans}``, where the cited segments go; the default cites
    every timestamp the answer gives, so the stage-1 ``format`` reward pays 1.0 for the target.
    """

    think_template: str = setting(THINK_TEMPLATE)

    def __post_init__(self):
        check_fields(self, "algo")
        target_text([[0.0, 1.0]], self.think_template)  # refuses a template without {spans}

    def target(self, sample) -> str:
        """The completion taught for ``sample`` (a :class:`~museg_lit.data.annotations.GroundingSample`)."""
        return target_text(sample.solution, self.think_template)
