"""Supervised warm start (SFT): teacher-forced answers in MUSEG's format before GRPO.

:mod:`.answers` builds the target text from a sample's ground truth, :mod:`.loss` the masked
cross-entropy on its tokens, :mod:`.module` the LightningModule that trains it with the same data
module, checkpointing, MLflow logging and Hugging Face export as GRPO (``algo=sft``).
"""

from museg_lit.sft.answers import THINK_TEMPLATE, target_text
from museg_lit.sft.config import SFTConfig

__all__ = ["THINK_TEMPLATE", "SFTConfig", "target_text"]
