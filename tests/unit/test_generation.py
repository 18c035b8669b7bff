"""One place builds every generate call: only our sampling settings (never the checkpoint's
``generation_config.json``), per-row completion budgets, and MUSEG's prompt + completion cap."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig, Qwen2_5_VLProcessor
from transformers.generation.utils import GenerationMixin

from museg_lit.models import ModelSpec, encode_prompts, load_policy
from museg_lit.models.generation import GREEDY, Sampling, SpecialTokens, generate, generation_config
from museg_lit.models.positions import sequence_positions
from museg_lit.models.processing import VIDEO_PLACEHOLDER
from museg_lit.rl.config import RolloutConfig
from museg_lit.rl.rollout import completion_budgets, completion_mask, generate_rollout

# Qwen2.5-VL-7B-Instruct's generation_config.json sampling values (what HF would merge in)
QWEN_DEFAULTS = {"do_sample": True, "temperature": 0.1, "top_p": 0.001, "top_k": 1, "repetition_penalty": 1.05}


@pytest.fixture(scope="module")
def model_and_processor(tiny_checkpoint):
    model = load_policy(ModelSpec(name="tiny", path=str(tiny_checkpoint), tiny=True))
    for key, value in QWEN_DEFAULTS.items():  # as if loaded from a real checkpoint
        setattr(model.generation_config, key, value)
    return model, Qwen2_5_VLProcessor.from_pretrained(tiny_checkpoint, local_files_only=True)


def _inputs(processor, questions):
    texts = [f"<|im_start|>user\n{VIDEO_PLACEHOLDER}{q}<|im_end|>\n<|im_start|>assistant\n" for q in questions]
    g = torch.Generator().manual_seed(0)
    videos = [torch.randint(0, 256, (4, 3, 56, 56), dtype=torch.uint8, generator=g) for _ in questions]
    return dict(encode_prompts(processor, texts, videos, [2.0] * len(questions)))


@pytest.fixture
def resolved(monkeypatch):
    """The generation config HF actually decodes with (after its merges), per generate call."""
    seen: list[GenerationConfig] = []
    original = GenerationMixin._prepare_generation_config

    def spy(self, generation_config, **kwargs):
        config, model_kwargs = original(self, generation_config, **kwargs)
        seen.append(config)
        return config, model_kwargs

    monkeypatch.setattr(GenerationMixin, "_prepare_generation_config", spy)
    return seen


def test_rollout_settings_are_musegs_vllm_sampling():
    cfg = RolloutConfig()
    assert (cfg.repetition_penalty, cfg.top_k, cfg.top_p, cfg.temperature) == (1.0, None, 1.0, 0.9)
    config = generation_config(cfg.sampling, SpecialTokens((2,), 0))
    assert (config.do_sample, config.temperature, config.top_p, config.top_k) == (True, 0.9, 1.0, 0)
    assert config.repetition_penalty == 1.0 and config.max_new_tokens == 4096


def test_rollouts_never_use_the_checkpoint_sampling_defaults(model_and_processor, resolved):
    model, processor = model_and_processor
    tokens = SpecialTokens.of(model, processor.tokenizer)
    torch.manual_seed(0)
    ro = generate_rollout(model, processor.tokenizer, _inputs(processor, ["Find the red circle."]), num_generations=8,
                          sampling=RolloutConfig(temperature=1.0, max_new_tokens=8).sampling, tokens=tokens)
    (config,) = resolved
    # the checkpoint says 1.05 / top_k 1 / top_p 0.001 / temperature 0.1; none of it is used
    assert (config.repetition_penalty, config.top_k, config.top_p, config.temperature) == (1.0, 0, 1.0, 1.0)
    assert config.do_sample and config.suppress_tokens == list(tokens.vision_token_ids)
    # top_k=1 would make all eight samples identical
    assert len({tuple(row.tolist()) for row in ro.completion_ids}) > 1
    assert model.generation_config.top_k == 1  # the checkpoint's config is restored afterwards


def test_evaluation_is_pure_argmax_whatever_the_checkpoint_says(model_and_processor, resolved):
    model, processor = model_and_processor
    inputs = _inputs(processor, ["Find the red circle."])
    tokens = SpecialTokens.of(model, processor.tokenizer)
    out = generate(model, inputs, Sampling(max_new_tokens=6, temperature=0.0), tokens)
    (config,) = resolved
    assert not config.do_sample and config.repetition_penalty == 1.0 and config.suppress_tokens is None
    # every generated token is the argmax of one teacher-forced forward pass (no penalty, no suppression)
    c, p = out.shape[1], inputs["input_ids"].shape[1]
    keep, _ = completion_mask(out, tokens.eos_token_ids)
    visual = {k: v for k, v in inputs.items() if k in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")}
    with torch.no_grad():
        logits = model(input_ids=torch.cat([inputs["input_ids"], out], dim=1),
                       attention_mask=torch.cat([inputs["attention_mask"], keep], dim=1),
                       position_ids=sequence_positions(model, inputs, c), **visual).logits  # [1, P+C, V]
    argmax = logits[:, p - 1:-1].argmax(-1)  # [1, C]
    assert torch.equal(argmax[keep.bool()], out[keep.bool()])
    assert GREEDY.greedy and GREEDY.max_new_tokens == 512


def test_completion_budgets_hand_computed():
    # prompt lengths 3600 and 100 (left padding counts nothing), 4096 new tokens, cap 4096
    mask = torch.zeros(2, 3600, dtype=torch.long)
    mask[0, :] = 1
    mask[1, -100:] = 1
    assert completion_budgets(mask, 4096, 4096).tolist() == [496, 3996]
    assert completion_budgets(mask, 256, 4096).tolist() == [256, 256]
    assert completion_budgets(mask, 256, None).tolist() == [256, 256]


def test_mask_ends_each_row_at_its_budget():
    ids = torch.tensor([[5, 9, 2, 0], [5, 2, 7, 7], [5, 6, 7, 8]])
    mask, truncated = completion_mask(ids, [2], budgets=torch.tensor([2, 4, 3]))
    # row 0: EOS at 2 is past its budget 2 -> 2 tokens, truncated; row 1: EOS at 1 -> kept through it;
    # row 2: no EOS within 3 -> 3 tokens, truncated
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]]
    assert truncated.tolist() == [True, False, True]


def test_rows_stop_at_their_own_budget(model_and_processor):
    model, processor = model_and_processor
    inputs = _inputs(processor, ["Find the red circle in this clip please.", "Find it."])
    lengths = inputs["attention_mask"].sum(1).tolist()
    cap = max(lengths) + 3  # the longer prompt may add 3 tokens, the shorter one more (max_new_tokens 10)
    torch.manual_seed(0)
    ro = generate_rollout(model, processor.tokenizer, inputs, num_generations=2, max_total_tokens=cap,
                          sampling=Sampling(max_new_tokens=10, temperature=1.0),
                          tokens=SpecialTokens(eos_token_ids=(-1,), pad_token_id=0))  # no EOS: run to budget
    budgets = [min(10, cap - n) for n in lengths for _ in range(2)]
    assert ro.completion_mask.sum(1).tolist() == budgets
    assert ro.truncated.all() and ro.completion_ids.shape[1] == max(budgets)


def test_a_prompt_without_room_is_refused(model_and_processor):
    model, processor = model_and_processor
    inputs = _inputs(processor, ["Find it."])
    n = int(inputs["attention_mask"].sum())
    with pytest.raises(ValueError, match=f"prompt of {n} tokens leaves no room"):
        generate_rollout(model, processor.tokenizer, inputs, num_generations=2, max_total_tokens=n,
                         sampling=Sampling(max_new_tokens=4), tokens=SpecialTokens.of(model, processor.tokenizer))


def test_design_keywords_build_the_same_rollout(model_and_processor):
    model, processor = model_and_processor
    inputs = _inputs(processor, ["Find it."])
    tokens = SpecialTokens.of(model, processor.tokenizer)
    torch.manual_seed(3)
    a = generate_rollout(model, processor.tokenizer, inputs, num_generations=2,
                         sampling=Sampling(max_new_tokens=5, temperature=0.7, top_k=5), tokens=tokens)
    torch.manual_seed(3)
    b = generate_rollout(model, processor.tokenizer, inputs, num_generations=2, max_new_tokens=5, temperature=0.7,
                         top_p=1.0, top_k=5, eos_token_ids=list(tokens.eos_token_ids), pad_token_id=tokens.pad_token_id,
                         suppress_token_ids=list(tokens.vision_token_ids))
    assert torch.equal(a.completion_ids, b.completion_ids) and a.texts == b.texts
