"""SFT LightningModule: teacher-forced answers, the warm start before GRPO (``algo=sft``).

One step takes B prompts (each with its decoded clip) and the answer the collator built from each
ground truth (:func:`museg_lit.sft.answers.target_text`, tokenised with the end-of-turn token),
and minimises the mean negative log-likelihood of the answer tokens (:mod:`museg_lit.sft.loss`);
prompt and video tokens are context only. Data, checkpointing, MLflow and the Hugging Face export
are GRPO's (:class:`museg_lit.policy_module.PolicyModule`), so ``+experiment=synthetic_grpo``
starts from this stage's export like from any checkpoint.

Metrics: ``sft/loss`` (mean NLL per answer token), ``sft/timestamp_loss`` (the same over the
digit tokens, in the think and the answer: what the grounding rewards later pay for),
``sft/answer_tokens`` (mean answer length) and ``time/step_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from museg_lit.data.batch import PromptBatch
from museg_lit.models.factory import ModelSpec
from museg_lit.policy_module import PolicyModule
from museg_lit.rl.health import peak_memory_mb
from museg_lit.rl.token_mask import timestamp_token_mask
from museg_lit.sft.config import SFTConfig
from museg_lit.sft.loss import answer_logprobs, masked_nll

__all__ = ["SFTModule"]


class SFTModule(PolicyModule):
    def __init__(
        self,
        model: ModelSpec,
        algo: SFTConfig,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
    ):
        super().__init__(model, optimizer, scheduler)
        self.algo = algo

    def training_step(self, batch: PromptBatch, batch_idx: int):
        if not self.has_batch(batch):  # every draw failed (data.max_skip_fraction=1): no step on any rank
            return None
        start = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)  # perf/peak_mem_mb is this step's peak
        ids, mask = batch.answer_ids, batch.answer_mask  # [B, C], [B, C] right-padded
        logp = answer_logprobs(self.policy, batch.inputs, ids, mask)  # [B, C]
        loss = masked_nll(logp, mask)
        with torch.no_grad():
            digits = timestamp_token_mask(ids, mask, self.processor.tokenizer, "all_digits").to(mask.device)  # [B, C]
            metrics = {
                "sft/loss": loss.detach(),
                "sft/timestamp_loss": masked_nll(logp.detach(), digits),
                "sft/answer_tokens": mask.sum(1).float().mean(),
                "time/decode_s": batch.decode_s,
                "time/step_s": time.perf_counter() - start,
                "perf/peak_mem_mb": peak_memory_mb(self.device),
            }
        self.log_dict(metrics, on_step=True, batch_size=ids.shape[0])
        return loss
