"""The typed batch every training stage receives: B prompts with their decoded clips, encoded.

The collator (:class:`museg_lit.data.datamodule.PromptCollator`) builds one :class:`PromptBatch`
per step; the module moves it to the device with :meth:`PromptBatch.to` (only the processor and
answer tensors travel: samples stay on the host). A batch none of whose draws decoded has
``inputs=None`` and no samples; its ``drawn`` / ``skipped`` still count against the skip budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from museg_lit.data.annotations import GroundingSample

__all__ = ["PromptBatch"]


@dataclass
class PromptBatch:
    """One step's prompts: ``samples[b]`` is row ``b`` of every tensor in ``inputs``."""

    samples: list[GroundingSample]  # B
    # processor output (input_ids / attention_mask [B, P], pixel_values_videos, video_grid_thw [B, 3],
    # second_per_grid_ts [B]); None when no draw of the batch decoded
    inputs: dict[str, Tensor] | None
    drawn: int = 0  # samples tried, replacements included
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason) of every failed draw
    decode_s: float = 0.0  # seconds spent decoding the batch's videos (summed over samples)
    # SFT only (collator ``answers=``): the taught answers, right-padded, closed by the end-of-turn token
    answer_ids: Tensor | None = None  # [B, C]
    answer_mask: Tensor | None = None  # [B, C]

    def __len__(self) -> int:
        return len(self.samples)

    def to(self, device: torch.device | str) -> PromptBatch:
        """A copy whose tensors live on ``device`` (non-tensor processor outputs are kept as they are)."""
        inputs = None if self.inputs is None else {
            k: v.to(device) if torch.is_tensor(v) else v for k, v in self.inputs.items()}
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, inputs=inputs, answer_ids=move(self.answer_ids), answer_mask=move(self.answer_mask))
