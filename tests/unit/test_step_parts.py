"""The pieces one GRPO step is made of, each on values worked by hand: the per-token KL weight,
the configured loss, DAPO's group selection with token-aware KL, reward columns, replay by
position, and the training-health numbers."""

import math

import pytest
import torch

from museg_lit.data.annotations import GroundingSample
from museg_lit.data.sampler import (
    ResumableBatchSampler,
    ResumableSampler,
    _group_repeat,
    group_repeat_position,
)
from museg_lit.rewards.columns import completion_columns
from museg_lit.rewards.schedule import RewardOutput, RewardPhase
from museg_lit.rl.config import AlgoConfig
from museg_lit.rl.health import answer_health, peak_memory_mb, zero_variance_share
from museg_lit.rl.kl import kl_k3
from museg_lit.rl.losses import AGGREGATIONS, PolicyLoss, policy_loss, register_aggregation
from museg_lit.rl.replay import RolloutReplay
from museg_lit.rl.rollout import Rollout
from museg_lit.rl.scored import LossTargets, ScoredRollout, pad_cat
from museg_lit.rl.token_mask import kl_weights


# ---- the KL weight: one representation ----
@pytest.mark.parametrize("beta", [0, 0.0, 1, 0.04])
def test_beta_given_as_int_or_float_is_a_float(beta):
    algo = AlgoConfig(beta=beta, beta_time=0 if beta == 1 else None, epsilon_high=1 if beta == 0 else None)
    assert type(algo.beta) is float and algo.beta == beta
    assert algo.beta_time is None or type(algo.beta_time) is float
    assert algo.epsilon_high is None or type(algo.epsilon_high) is float
    assert type(algo.num_iterations) is int  # int fields stay ints


def test_policy_loss_with_a_per_token_beta_tensor():
    # One row, 3 tokens, A = 1, logp = [-1, -1, -1], ref = [-2, -2, -2] -> k3 KL = e^-1 on every token.
    # beta per token [0.04, 0, 0.5]: token losses -1 + beta_t * e^-1; sequence mean over 3 tokens.
    lp = torch.full((1, 3), -1.0, requires_grad=True)
    beta = torch.tensor([[0.04, 0.0, 0.5]])
    out = policy_loss(lp, torch.tensor([1.0]), torch.ones(1, 3), ref_logp=torch.full((1, 3), -2.0), beta=beta)
    kl = math.exp(-1)
    assert out.loss.item() == pytest.approx(sum(-1 + b * kl for b in (0.04, 0.0, 0.5)) / 3, abs=1e-6)
    out.loss.backward()
    # d/dlp: (-A + beta_t * (1 - e^(ref - lp))) / 3 -> the zero-beta token gets the surrogate's gradient only
    expected = torch.tensor([[(-1 + b * (1 - math.exp(-1))) / 3 for b in (0.04, 0.0, 0.5)]])
    assert torch.allclose(lp.grad, expected, atol=1e-6)
    assert lp.grad[0, 1].item() == pytest.approx(-1 / 3)
    # a constant tensor equals the scalar
    scalar = policy_loss(lp.detach(), torch.tensor([1.0]), torch.ones(1, 3), ref_logp=torch.full((1, 3), -2.0), beta=0.5)
    tensor = policy_loss(lp.detach(), torch.tensor([1.0]), torch.ones(1, 3), ref_logp=torch.full((1, 3), -2.0),
                         beta=torch.full((1, 3), 0.5))
    assert scalar.loss.item() == pytest.approx(tensor.loss.item())


class _DigitTokenizer:
    """Tokens are characters (id = code point), as for a tokenizer that splits digits one per token."""

    def convert_ids_to_tokens(self, ids):
        return [chr(i) for i in ids]

    def convert_tokens_to_string(self, tokens):
        return "".join(tokens)


def _ids(text: str) -> list[int]:
    return [ord(ch) for ch in text]


def test_kl_weights_constant_or_token_aware():
    text = "<answer>1.5-2</answer>"
    ids, mask = torch.tensor([_ids(text)]), torch.ones(1, len(text), dtype=torch.long)
    constant = kl_weights(ids, mask, _DigitTokenizer(), beta=0.04)
    assert constant.dtype == torch.float32 and constant.shape == (1, len(text))
    assert torch.allclose(constant, torch.full((1, len(text)), 0.04))
    aware = kl_weights(ids, mask, _DigitTokenizer(), beta=0.04, beta_time=0.0)
    zero = [text[i] for i, w in enumerate(aware[0].tolist()) if w == 0.0]
    assert zero == ["1", ".", "5", "2"]  # the timestamp tokens of the answer; "-" and the tags keep 0.04
    assert aware[0].tolist().count(pytest.approx(0.04)) == len(text) - 4


def test_configured_loss_equals_the_pure_function():
    algo = AlgoConfig(aggregation="constant", epsilon_low=0.1, kl_estimator="k1")
    loss = algo.loss(max_completion_length=8)
    assert isinstance(loss, PolicyLoss) and loss.max_completion_length == 8 and loss.aggregation == "constant"
    torch.manual_seed(0)
    lp, old, ref = torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 5)
    adv, mask, beta = torch.randn(3), (torch.rand(3, 5) > 0.3).float(), torch.rand(3, 5)
    got = loss(lp, adv, mask, kl_weight=beta, old_logp=old, ref_logp=ref)
    want = policy_loss(lp, adv, mask, old_logp=old, ref_logp=ref, beta=beta, kl_estimator="k1", epsilon_low=0.1,
                       aggregation="constant", max_completion_length=8)
    for field in ("loss", "policy_loss", "kl", "clip_fraction"):
        assert getattr(got, field).item() == pytest.approx(getattr(want, field).item())
    with pytest.raises(KeyError, match="aggregation"):
        PolicyLoss(aggregation="nope")


def test_a_registered_aggregation_is_selectable():
    @register_aggregation("test_max")
    def masked_max(x, mask, max_len=None):
        return (x * mask).max()

    try:
        out = PolicyLoss(aggregation="test_max")(torch.zeros(1, 2), torch.tensor([3.0]), torch.ones(1, 2))
        assert out.loss.item() == pytest.approx(-3.0)  # token losses -A = -3 each
        with pytest.raises(ValueError, match="registered already"):
            register_aggregation("test_max")(masked_max)
    finally:
        AGGREGATIONS.pop("test_max")


# ---- DAPO's group selection keeps the token-aware weights of the kept rows ----
def _scored(num_groups: int = 3, g: int = 2, width: int = 4) -> ScoredRollout:
    n = num_groups * g
    rollout = Rollout(
        prompt_inputs={"input_ids": torch.arange(num_groups * 2).view(num_groups, 2),
                       "attention_mask": torch.ones(num_groups, 2, dtype=torch.long)},
        completion_ids=torch.arange(n * width).view(n, width), completion_mask=torch.ones(n, width),
        truncated=torch.zeros(n, dtype=torch.bool), texts=[f"t{i}" for i in range(n)], num_generations=g)
    rewards = RewardOutput(torch.arange(n).float(), {"f": torch.arange(n).float() * 10}, RewardPhase("main", 0, {"f": 1}))
    kl_weight = torch.tensor([[0.04, 0.0, 0.04, 0.0]]).repeat(n, 1) * torch.arange(1, n + 1).unsqueeze(1)  # row-distinct
    samples = [GroundingSample(idx=str(b), problem="q", solution=[[0.0, 1.0]], video="v.mp4", task="tvg", duration=10.0)
               for b in range(num_groups)]
    return ScoredRollout(rollout, samples, rewards, torch.tensor([0.0, 1.0, 2.0]), torch.arange(n).float(),
                         torch.ones(n, width), kl_weight, torch.full((n, width), -1.0), None)


def test_select_groups_keeps_token_aware_kl_rows():
    scored = _scored()
    kept = scored.select_groups(torch.tensor([False, True, True]))
    rows = [2, 3, 4, 5]
    assert [s.idx for s in kept.samples] == ["1", "2"]
    assert torch.equal(kept.kl_weight, scored.kl_weight[rows])
    assert kept.kl_weight[:, 1].tolist() == [0.0] * 4 and kept.kl_weight[:, 0].tolist() == pytest.approx(
        [0.04 * (r + 1) for r in rows])
    assert kept.advantages.tolist() == [2.0, 3.0, 4.0, 5.0]
    assert kept.rewards.per_function["f"].tolist() == [20.0, 30.0, 40.0, 50.0]
    assert kept.group_std.tolist() == [1.0, 2.0] and kept.old_logp is None
    assert kept.rollout.texts == ["t2", "t3", "t4", "t5"] and kept.rollout.prompt_inputs["input_ids"].shape[0] == 2


def test_loss_targets_join_chunks_of_different_widths():
    a, b = _scored(width=4), _scored(width=2)
    targets = LossTargets.of([a, b.select_groups(torch.tensor([True, False, False]))])
    assert targets.mask.shape == targets.kl_weight.shape == targets.ref_logp.shape == (8, 4)
    assert targets.mask[6:, 2:].sum() == 0  # padding is masked out
    assert targets.old_logp is None and targets.advantages.tolist() == [0, 1, 2, 3, 4, 5, 0, 1]
    assert pad_cat([torch.tensor([[1, 2]]), torch.tensor([[3]])]).tolist() == [[1, 2], [3, 0]]


# ---- reward columns ----
def test_completion_columns_repeat_each_prompt_g_times():
    samples = [GroundingSample(idx=i, problem="q", solution=[[float(i), float(i) + 1]], video="v", task="tvg", duration=d)
               for i, d in ((0, 10.0), (1, 20.0))]
    solution, columns = completion_columns(samples, 2)
    assert solution == [[[0.0, 1.0]]] * 2 + [[[1.0, 2.0]]] * 2
    assert columns["duration"] == [10.0, 10.0, 20.0, 20.0] and columns["idx"] == [0, 0, 1, 1]
    assert columns["task"] == ["tvg"] * 4
    assert "solution" not in columns


# ---- replay by position ----
@pytest.mark.parametrize(("num_batches", "group", "repeats"), [(3, 2, 2), (5, 2, 3), (4, 1, 2), (2, 4, 2)])
def test_group_repeat_position_inverts_the_layout(num_batches, group, repeats):
    batches = [[b] for b in range(num_batches)]
    laid_out = _group_repeat(batches, group, repeats)
    seen: dict[tuple[int, int], int] = {}
    for position, batch in enumerate(laid_out):
        index, repeat, slot = group_repeat_position(position, num_batches, group, repeats)
        assert batch == batches[index * group + slot]  # the slot names the batch
        assert repeat == seen.get((index, slot), 0)  # each (group, slot) is seen 0, 1, ... times in order
        seen[(index, slot)] = repeat + 1
    assert set(seen.values()) == {repeats}
    with pytest.raises(IndexError):
        group_repeat_position(len(laid_out), num_batches, group, repeats)


def test_batch_sampler_positions_match_its_batches():
    sampler = ResumableBatchSampler(ResumableSampler(5, shuffle=False), batch_size=2, group=2, repeats=2)
    batches = list(sampler)  # [0,1] [2,3] [0,1] [2,3] [4] [4]
    assert [sampler.position(i) for i in range(len(batches))] == [
        (0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 1, 0)]


def test_replay_reuses_by_position_not_by_sample_ids():
    replay = RolloutReplay(num_iterations=3)
    # two batches of one group that hold the same ids (wrap-around padding) are two different slots
    replay.store((0, 0, 0), 0, "slot0")
    replay.store((0, 0, 1), 0, "slot1")
    assert replay.lookup((0, 0, 0), 1) == "slot0" and replay.lookup((0, 0, 1), 1) == "slot1"
    assert replay.lookup((0, 0, 0), 2) == "slot0" and len(replay) == 1  # the last pass takes it out
    replay.store((0, 1, 0), 0, "next")  # a new group: the old one is dropped
    assert len(replay) == 1 and replay.lookup((0, 0, 1), 2) is None
    assert replay.lookup((0, 1, 0), 0) is None  # a first pass always generates
    replay.store((0, 1, 1), 2, "last pass")  # nothing is kept from a last pass
    assert replay.lookup((0, 1, 1), 2) is None


# ---- training health ----
def test_zero_variance_share():
    assert zero_variance_share(torch.tensor([0.0, 0.5, 1e-9, 2.0])) == 0.5
    assert zero_variance_share(torch.zeros(0)) == 0.0


def test_answer_health_by_hand():
    texts = [
        "<think>x</think><answer>0.00-9.50</answer>",  # one segment, 95% of a 10 s video: degenerate
        "<answer>1-2 3-9.5</answer>",  # two segments: fine, even if they cover most of it
        "<answer></answer>",  # no segment: degenerate, but the format parses
        "1-2",  # no <answer>: a format failure (and degenerate)
        "<answer>1-2</answer>",  # fine
    ]
    health = answer_health(texts, [10.0] * 5)
    assert health == {"format_failures": pytest.approx(1 / 5), "degenerate_answers": pytest.approx(3 / 5)}
    assert answer_health(["<answer>0-9</answer>"], [10.0]) == {"format_failures": 0.0, "degenerate_answers": 1.0}
    assert answer_health(["<answer>0-8.9</answer>"], [10.0])["degenerate_answers"] == 0.0
    assert answer_health(["<answer>0-9</answer>"], [None])["degenerate_answers"] == 0.0  # unknown duration
    with pytest.raises(ValueError, match="durations"):
        answer_health(["a"], [])


def test_peak_memory_on_cpu_is_the_process_high_water_mark():
    before = peak_memory_mb(torch.device("cpu"))
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB touched
    block += 1
    after = peak_memory_mb(torch.device("cpu"))
    assert 10 < before <= after and after >= 64


def test_kl_k3_used_in_worked_values():  # the estimator the worked values above assume
    assert kl_k3(torch.tensor([-1.0]), torch.tensor([-2.0])).item() == pytest.approx(math.exp(-1))
