"""Shared prefix: each prompt (and its video) encoded once for its G completions, with the same
numbers as repeating it G times — in generation and in every log-prob pass.

Equalities are checked on a real (tiny, fp32) Qwen2.5-VL with two prompts of different lengths
(left padding) and completions of different lengths (right padding): per-token log-probs within
1e-4 and parameter gradients within 1e-3 relative, plain, with gradient checkpointing, with LoRA,
with token-aware KL and with reused vision features. The 2-process FSDP2 equality is in
``tests/integration/test_fsdp.py``.
"""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2_5_VLProcessor

from museg_lit.models import ModelSpec, encode_prompts, load_policy
from museg_lit.models.batch import repeat_visual_batch
from museg_lit.models.generation import Sampling, SpecialTokens, generate_groups
from museg_lit.models.lora import LoraSpec, reference_context
from museg_lit.models.processing import VIDEO_PLACEHOLDER
from museg_lit.rl.logprobs import completion_logprobs
from museg_lit.rl.losses import policy_loss
from museg_lit.rl.packing import group_attention_mask, logit_positions, pack_groups, packed_positions
from museg_lit.rl.rollout import generate_rollout, select_rollout
from museg_lit.rl.token_mask import per_token_beta

G, C = 3, 7


# ---------------------------------------------------------------- the packed layout (pure)
def test_group_mask_prompt_is_shared_and_completions_are_blind_to_each_other():
    mask = group_attention_mask(torch.tensor([[1, 1]]), torch.ones(2, 1, dtype=torch.long), 2)  # P=2, G=2, C=1
    assert mask.shape == (1, 1, 4, 4)
    assert mask[0, 0].int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 1]]


def test_group_mask_hides_padding_but_never_empties_a_row():
    prompt = torch.tensor([[0, 1, 1]])  # left padding
    completion = torch.tensor([[1, 0], [1, 1]])  # first completion has one real token
    mask = group_attention_mask(prompt, completion, 2)[0, 0]  # [7, 7]
    assert not mask[1:, 0].any()  # the pad is nobody's key
    assert not mask[5:, 4].any()  # c1's pad is nobody else's key either
    assert mask.any(dim=1).all()  # every query sees at least itself (no NaN rows in sdpa)
    assert mask[6].int().tolist() == [0, 1, 1, 0, 0, 1, 1]  # c2's 2nd token: prompt + its own first token


def test_logit_positions_and_packed_positions():
    assert logit_positions(3, 2, 2).tolist() == [2, 3, 2, 5]
    prompt = torch.arange(3).expand(3, 1, 3)  # [3, 1, 3]
    pos = packed_positions(prompt, torch.tensor([3]), 2, 2)
    assert pos[0, 0].tolist() == [0, 1, 2, 3, 4, 3, 4]  # each completion restarts at the prompt's next position
    with pytest.raises(ValueError, match="4 completions for 1 prompts x 2"):
        pack_groups(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3), prompt, torch.tensor([3]),
                    torch.ones(4, 2, dtype=torch.long), torch.ones(4, 2), 2)


# ---------------------------------------------------------------- a real tiny Qwen2.5-VL
@pytest.fixture(scope="module")
def processor(tiny_checkpoint):
    return Qwen2_5_VLProcessor.from_pretrained(tiny_checkpoint, local_files_only=True)


@pytest.fixture(scope="module")
def prompts(processor):
    """Two prompts of different lengths (left padding) with clips of 16 and 6 frames."""
    questions = ["When does the red circle appear in the clip, and when does it leave?", "Find it."]
    texts = [f"<|im_start|>user\n{VIDEO_PLACEHOLDER}{q}<|im_end|>\n<|im_start|>assistant\n" for q in questions]
    g = torch.Generator().manual_seed(0)
    videos = [torch.randint(0, 256, (n, 3, 56, 56), dtype=torch.uint8, generator=g) for n in (16, 6)]
    inputs = dict(encode_prompts(processor, texts, videos, [2.0, 1.7]))
    assert (inputs["attention_mask"] == 0).any()  # really left-padded
    return inputs


@pytest.fixture(scope="module")
def completions():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(10, 200, (2 * G, C), generator=g)  # [B*G, C]
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # completions of different lengths
    mask[5, 2:] = 0
    return ids.masked_fill(mask == 0, 0), mask


def _policy(tiny_checkpoint, **spec):
    torch.manual_seed(0)
    return load_policy(ModelSpec(name="tiny", path=str(tiny_checkpoint), tiny=True, **spec)).train()


def _pass(model, prompts, completions, shared: bool, loss_fn=None, **kw):
    """Log-probs and gradients of one pass; ``shared`` packs, else G prompt copies."""
    ids, mask = completions
    model.zero_grad(set_to_none=True)
    if shared:
        logp = completion_logprobs(model, prompts, ids, mask, num_generations=G, **kw)
    else:
        logp = completion_logprobs(model, repeat_visual_batch(prompts, G), ids, mask)
    loss = loss_fn(logp) if loss_fn else (logp * mask).sum() / mask.sum()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return logp.detach(), grads


def _assert_equal(a, b, mask):
    (logp_a, grads_a), (logp_b, grads_b) = a, b
    diff = (logp_a - logp_b)[mask.bool()].abs().max()
    assert diff < 1e-4, f"log-probs differ by {float(diff):.2e}"
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name, ga in grads_a.items():
        rel = (ga - grads_b[name]).norm() / ga.norm().clamp_min(1e-8)
        assert rel < 1e-3, f"{name}: gradients differ by {float(rel):.2e} relative"


@pytest.mark.parametrize("variant", ["plain", "gradient_checkpointing", "lora"])
def test_shared_logprobs_and_gradients_equal_the_repeated_pass(variant, tiny_checkpoint, prompts, completions):
    spec = {"gradient_checkpointing": {"gradient_checkpointing": True},
            "lora": {"lora": LoraSpec(enabled=True, r=4, alpha=8, dropout=0.0)}}.get(variant, {})
    model = _policy(tiny_checkpoint, **spec)
    if variant == "gradient_checkpointing":
        assert model.is_activation_checkpointing
    if variant == "lora":  # adapters start at zero; move them so they matter in the forward
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.02)
    repeated = _pass(model, prompts, completions, shared=False)
    shared = _pass(model, prompts, completions, shared=True)
    _assert_equal(repeated, shared, completions[1])
    assert any("visual" in n for n in shared[1])  # the vision tower is trained through the shared prefix
    if variant == "lora":  # the reference (adapters disabled) too
        ids, mask = completions
        with torch.no_grad(), reference_context(model):
            a = completion_logprobs(model, repeat_visual_batch(prompts, G), ids, mask)
            b = completion_logprobs(model, prompts, ids, mask, num_generations=G)
        assert (a - b)[mask.bool()].abs().max() < 1e-4


def test_shared_loss_with_token_aware_kl_equals_the_repeated_one(tiny_checkpoint, prompts, completions):
    model = _policy(tiny_checkpoint)
    ids, mask = completions
    reference = _policy(tiny_checkpoint, seed=0)
    with torch.no_grad():
        for p in reference.parameters():  # a reference that differs from the policy: KL != 0
            p.add_(torch.randn_like(p) * 0.01)
        ref = completion_logprobs(reference, prompts, ids, mask, num_generations=G)
        ref_repeated = completion_logprobs(reference, repeat_visual_batch(prompts, G), ids, mask)
    assert (ref - ref_repeated)[mask.bool()].abs().max() < 1e-4
    timestamps = torch.zeros_like(mask, dtype=torch.bool)
    timestamps[:, 2:4] = True
    beta = per_token_beta(timestamps, 0.04, 0.4)  # [B*G, C]
    advantages = torch.linspace(-1, 1, 2 * G)

    def loss(logp):
        return policy_loss(logp, advantages, mask, ref_logp=ref, beta=beta).loss

    _assert_equal(_pass(model, prompts, completions, False, loss), _pass(model, prompts, completions, True, loss), mask)


def test_reused_vision_features_give_the_same_numbers(tiny_checkpoint, prompts, completions):
    model = _policy(tiny_checkpoint, freeze_vision=True)
    with torch.no_grad():
        features = model.model.get_video_features(prompts["pixel_values_videos"], prompts["video_grid_thw"]).pooler_output
    calls = []
    handle = model.model.visual.register_forward_hook(lambda *a: calls.append(1))
    try:
        fresh = _pass(model, prompts, completions, shared=True)
        reused = _pass(model, prompts, completions, shared=True, video_features=tuple(features))
    finally:
        handle.remove()
    assert len(calls) == 1  # only the fresh pass ran the vision tower
    _assert_equal(fresh, reused, completions[1])


# ---------------------------------------------------------------- generation
def _vision_patches(model, fn):
    """Run ``fn`` and return the number of patch rows the vision tower encoded."""
    seen = []
    handle = model.model.visual.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]))
    try:
        out = fn()
    finally:
        handle.remove()
    return out, sum(seen)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_shared_generation_gives_the_same_tokens(temperature, tiny_checkpoint, processor, prompts):
    model = _policy(tiny_checkpoint)
    tokens = SpecialTokens.of(model, processor.tokenizer)
    sampling = Sampling(max_new_tokens=12, temperature=temperature)
    budgets = torch.tensor([12, 12, 12, 9, 9, 9])

    def run(share):
        torch.manual_seed(123)  # the same sampling stream: the prefill draws no random numbers
        return generate_groups(model, prompts, sampling, tokens, num_generations=G, budgets=budgets,
                               suppress_vision=True, share_prefix=share)

    repeated, patches_repeated = _vision_patches(model, lambda: run(False))
    shared, patches_shared = _vision_patches(model, lambda: run(True))
    assert torch.equal(repeated.completion_ids, shared.completion_ids)
    if temperature:
        assert len({tuple(r) for r in shared.completion_ids.tolist()}) > 2  # really sampled
    video_patches = prompts["pixel_values_videos"].shape[0]
    assert (patches_repeated, patches_shared) == (G * video_patches, video_patches)  # vision once per prompt
    assert len(shared.video_features) == 2 and repeated.video_features is None
    merge = model.config.vision_config.spatial_merge_size ** 2
    assert [f.shape[0] for f in shared.video_features] == (prompts["video_grid_thw"].prod(-1) // merge).tolist()


def test_rollout_keeps_prompts_once_and_selects_whole_groups(tiny_checkpoint, processor, prompts):
    model = _policy(tiny_checkpoint)
    tokens = SpecialTokens.of(model, processor.tokenizer)
    ro = generate_rollout(model, processor.tokenizer, prompts, num_generations=G, tokens=tokens,
                          sampling=Sampling(max_new_tokens=5), keep_video_features=True)
    assert ro.prompt_inputs["input_ids"].shape[0] == 2 and ro.completion_ids.shape[0] == 2 * G
    assert ro.num_generations == G and len(ro.video_features) == 2
    second = select_rollout(ro, torch.tensor([False, True]))
    assert torch.equal(second.prompt_inputs["input_ids"], prompts["input_ids"][1:])
    assert torch.equal(second.completion_ids, ro.completion_ids[G:]) and second.texts == ro.texts[G:]
    assert second.video_features[0] is ro.video_features[1]
    patches_first = int(prompts["video_grid_thw"][0].prod())
    assert torch.equal(second.prompt_inputs["pixel_values_videos"], prompts["pixel_values_videos"][patches_first:])
    assert ro.expanded_inputs["input_ids"].shape[0] == 2 * G
