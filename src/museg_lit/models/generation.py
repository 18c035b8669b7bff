"""The one place where the platform calls ``generate``: sampling settings, stop tokens, 3D positions.

Training rollouts (:mod:`museg_lit.rl.rollout`), evaluation (:mod:`museg_lit.evaluation.generate`)
and the training-time eval callback all come through :func:`generate`, so they share:

* **Only our sampling settings.** Hugging Face merges the checkpoint's ``generation_config.json``
  into every call (Qwen2.5-VL's sets ``repetition_penalty=1.05``, ``top_k=1``, ``top_p=0.001``,
  ``temperature=0.1``) and fills unset fields with library defaults (``top_k=50``). MUSEG sampled
  with vLLM ``SamplingParams(temperature, max_tokens)``: no repetition penalty, no top-k/top-p.
  :func:`generation_config` sets every sampling field from :class:`Sampling`, and the checkpoint's
  config is swapped out for ours during the call, so nothing else can leak in.
* **Stop tokens** looked up once (:class:`SpecialTokens`).
* **Positions by the checkpoints' rule** (:mod:`museg_lit.models.positions`), passed explicitly;
  Hugging Face then extends them by one per generated token, which equals ``prompt max + 1 + k``
  because every prompt ends with text (checked).
* **Per-row completion budgets** (``prompt + completion <= max_total_tokens``, MUSEG's vLLM
  ``max_model_len``): a stopping criterion ends each row at its own budget.
* **One prefix per prompt** (:func:`generate_groups`, training rollouts): the G completions of a
  prompt share its prefix. The prompt (vision tower included) is prefilled once, the KV cache is
  repeated to the G rows, and Hugging Face decodes from there exactly as it would have after its
  own prefill of G copies (same logits, so greedy and seeded sampling give the same tokens; tested).
  The prefill covers all but the prompt's last token (text), which HF feeds as its first step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from museg_lit.models.batch import TEXT_KEYS, repeat_visual_batch, visual_inputs
from museg_lit.models.positions import prompt_positions

__all__ = ["GREEDY", "Generated", "Sampling", "SpecialTokens", "generate", "generate_groups", "generation_config"]

VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens. ``temperature == 0`` is greedy (vLLM's convention); ``top_k`` None or 0
    and ``top_p`` 1.0 are off; ``repetition_penalty`` 1.0 is off."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    repetition_penalty: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


GREEDY = Sampling(max_new_tokens=512, temperature=0.0)  # MUSEG's evaluation protocol


@dataclass(frozen=True)
class SpecialTokens:
    """Stop, pad and never-sample token ids of a checkpoint."""

    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    vision_token_ids: tuple[int, ...] = ()  # suppressed in training rollouts

    @classmethod
    def of(cls, model, tokenizer) -> SpecialTokens:
        """EOS ids from the checkpoint's generation config (a stop list is not a sampling default),
        else the tokenizer's; pad from the tokenizer."""
        eos = getattr(model.generation_config, "eos_token_id", None)
        eos = eos if isinstance(eos, (list, tuple)) else [eos if eos is not None else tokenizer.eos_token_id]
        # convert_tokens_to_ids, not get_vocab(): the latter copies a 150k-entry dict per call, and
        # evaluation looks the ids up once per batch
        found = tokenizer.convert_tokens_to_ids(list(VISION_TOKENS))
        vision = tuple(int(i) for i in found if i is not None and i != tokenizer.unk_token_id)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
        return cls(tuple(int(e) for e in eos if e is not None), int(pad), vision)


def generation_config(sampling: Sampling, tokens: SpecialTokens, *, suppress_vision: bool = False) -> GenerationConfig:
    """A complete ``GenerationConfig``: every field that shapes the distribution is set from ``sampling``."""
    sample = not sampling.greedy
    return GenerationConfig(
        max_new_tokens=sampling.max_new_tokens,
        do_sample=sample,
        num_beams=1,
        temperature=sampling.temperature if sample else 1.0,
        top_p=sampling.top_p if sample else 1.0,
        top_k=(sampling.top_k or 0) if sample else 0,  # 0 = off (None would become the library's 50)
        min_p=None,
        typical_p=1.0,
        epsilon_cutoff=0.0,
        eta_cutoff=0.0,
        repetition_penalty=sampling.repetition_penalty,
        no_repeat_ngram_size=0,
        length_penalty=1.0,
        eos_token_id=list(tokens.eos_token_ids),
        pad_token_id=tokens.pad_token_id,
        suppress_tokens=list(tokens.vision_token_ids) if suppress_vision and tokens.vision_token_ids else None,
        use_cache=True,
    )


class RowBudget(StoppingCriteria):
    """Stops row ``i`` once it has ``budgets[i]`` new tokens (``budgets`` ``[N]``)."""

    def __init__(self, prompt_length: int, budgets: Tensor):
        self.prompt_length, self.budgets = prompt_length, budgets

    def __call__(self, input_ids: Tensor, scores, **kwargs) -> Tensor:
        return (input_ids.shape[1] - self.prompt_length) >= self.budgets.to(input_ids.device)  # [N] bool


def _hf_model(model):
    """The module that owns ``generation_config`` (peft wraps it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextmanager
def _only(model, config: GenerationConfig) -> Iterator[None]:
    """Inside, the checkpoint's generation config *is* ``config``: HF has nothing else to merge in.
    The model is in eval mode (no dropout) and restored afterwards."""
    target = _hf_model(model)
    saved, was_training = target.generation_config, model.training
    target.generation_config = config
    model.eval()
    try:
        yield
    finally:
        target.generation_config = saved
        model.train(was_training)


class Generated(NamedTuple):
    completion_ids: Tensor  # [B*G, C] prompt-major, right-padded with the pad id
    video_features: tuple[Tensor, ...] | None  # per prompt, merged vision-tower output (shared prefill only)


@torch.no_grad()
def generate(
    model,
    inputs: dict[str, Tensor],
    sampling: Sampling,
    tokens: SpecialTokens,
    *,
    budgets: Tensor | None = None,
    suppress_vision: bool = False,
    synced_gpus: bool | None = None,
) -> Tensor:
    """Completion ids ``[N, C]`` (right-padded with ``tokens.pad_token_id``) for a left-padded batch.

    ``budgets`` ``[N]``: new tokens allowed per row (default ``sampling.max_new_tokens`` for all);
    a row stops at its budget, the batch at the largest one. ``synced_gpus``: HF's lock-step switch
    for forwards that issue collectives (None lets transformers decide).
    """
    return generate_groups(model, inputs, sampling, tokens, num_generations=1, budgets=budgets,
                           suppress_vision=suppress_vision, synced_gpus=synced_gpus, share_prefix=False).completion_ids


@torch.no_grad()
def generate_groups(
    model,
    inputs: dict[str, Tensor],
    sampling: Sampling,
    tokens: SpecialTokens,
    *,
    num_generations: int,
    budgets: Tensor | None = None,
    suppress_vision: bool = False,
    synced_gpus: bool | None = None,
    share_prefix: bool = True,
) -> Generated:
    """``num_generations`` (G) completions for each of the B prompts of ``inputs``, prompt-major.

    ``share_prefix``: prefill each prompt once and repeat its KV cache (the vision tower runs B
    times, not B*G); ``False`` repeats the prompts first (the path every peer takes). ``budgets``
    ``[B*G]``; see :func:`generate` for the rest.
    """
    positions = prompt_positions(model, inputs)  # [3, B, P], [B]
    # HF extends explicit positions by (last column + 1) per step: right only if the prompt ends
    # with its largest position, i.e. with text (a chat prompt ends with "<|im_start|>assistant\n")
    if not torch.equal(positions.position_ids[:, :, -1].amax(0) + 1, positions.next_position):
        raise ValueError("every prompt must end with text (the generation prompt), not with a video")
    config = generation_config(sampling, tokens, suppress_vision=suppress_vision)
    criteria = None
    if budgets is not None:
        config.max_new_tokens = int(budgets.max())
        criteria = StoppingCriteriaList([RowBudget(inputs["input_ids"].shape[1], budgets)])
    g, prompt_length = num_generations, inputs["input_ids"].shape[1]
    position_ids = positions.position_ids.repeat_interleave(g, dim=1)  # [3, B*G, P]
    features, extra = None, {}
    with _only(model, config):
        if share_prefix:
            prefix = model(**{k: inputs[k][:, :-1] for k in TEXT_KEYS}, position_ids=positions.position_ids[..., :-1],
                           use_cache=True, logits_to_keep=1, **visual_inputs(inputs))
            prefix.cache.batch_repeat_interleave(g)  # [B, ...] -> [B*G, ...] per layer
            video = getattr(prefix, "video_outputs", None)
            features = tuple(video.pooler_output) if video is not None else None
            rows = {k: inputs[k].repeat_interleave(g, dim=0) for k in TEXT_KEYS}  # [B*G, P]; the video is cached
            extra = {"cache": prefix.cache}
        else:
            rows = repeat_visual_batch(inputs, g)
        sequences = model.generate(**rows, position_ids=position_ids, generation_config=config,
                                   stopping_criteria=criteria, synced_gpus=synced_gpus, **extra)  # [B*G, P+C]
    return Generated(sequences[:, prompt_length:], features)
