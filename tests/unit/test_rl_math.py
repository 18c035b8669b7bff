"""Advantages, KL estimators and losses against values worked by hand (arithmetic in comments)."""

import math

import pytest
import torch

from museg_lit.rl.advantages import group_advantages
from museg_lit.rl.kl import kl_k1, kl_k2, kl_k3
from museg_lit.rl.losses import constant_norm, policy_loss, sequence_mean, token_mean
from museg_lit.rl.rollout import completion_mask, repeat_visual_batch


def test_group_advantages_two_groups():
    # group 1: [1, 3]: mean 2, unbiased std sqrt(((1-2)^2 + (3-2)^2)/1) = sqrt(2) = 1.414214
    #          A = ∓1 / (1.414214 + 1e-4) = ∓0.707057
    # group 2: [0, 0]: mean 0, std 0 -> A = 0/(0+1e-4) = 0 (no NaN)
    out = group_advantages(torch.tensor([1.0, 3.0, 0.0, 0.0]), 2)
    expected = 1 / (math.sqrt(2) + 1e-4)
    assert torch.allclose(out.advantages, torch.tensor([-expected, expected, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(out.mean, torch.tensor([2.0, 0.0]))
    assert torch.allclose(out.std, torch.tensor([math.sqrt(2), 0.0]))


def test_group_advantages_unscaled_is_dr_grpo():
    # G=4 rewards [0, 1, 1, 2]: mean 1 -> A = r - 1 = [-1, 0, 0, 1] (no std division)
    out = group_advantages(torch.tensor([0.0, 1.0, 1.0, 2.0]), 4, scale=False)
    assert out.advantages.tolist() == [-1.0, 0.0, 0.0, 1.0]


def test_group_advantages_rejects_partial_group():
    with pytest.raises(ValueError, match="multiple of 4"):
        group_advantages(torch.zeros(6), 4)


def test_kl_estimators_by_hand():
    lp, ref = torch.tensor([-1.0]), torch.tensor([-2.0])
    # d = ref - lp = -1
    assert kl_k1(lp, ref).item() == pytest.approx(1.0)  # lp - ref = 1
    assert kl_k2(lp, ref).item() == pytest.approx(0.5)  # 1^2 / 2
    assert kl_k3(lp, ref).item() == pytest.approx(math.exp(-1) + 1 - 1)  # e^-1 - (-1) - 1 = 0.367879
    assert kl_k3(lp, lp).item() == 0.0  # identical distributions


def test_aggregations_by_hand():
    x = torch.tensor([[1.0, 3.0], [5.0, 7.0]])
    m = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    assert sequence_mean(x, m).item() == pytest.approx(3.5)  # ((1+3)/2 + 5/1) / 2
    assert token_mean(x, m).item() == pytest.approx(3.0)  # (1+3+5)/3
    assert constant_norm(x, m, 4).item() == pytest.approx(9 / 8)  # (1+3+5)/(2 rows * 4)


def test_all_masked_row_counts_zero_not_nan():
    x = torch.tensor([[2.0, 2.0], [9.0, 9.0]])
    m = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert sequence_mean(x, m).item() == pytest.approx(1.0)  # (2 + 0) / 2
    assert token_mean(torch.zeros(1, 2), torch.zeros(1, 2)).item() == 0.0


def test_museg_loss_value_and_gradient():
    # One row, tokens logp = [-1, -2], ref = [-2, -2], A = 0.5, beta = 0.04, k3.
    # ratio = 1 -> surrogate = 0.5 per token; KL = [e^-1 + 1 - 1, 0] = [0.367879, 0]
    # per-token loss = -(0.5) + 0.04*KL = [-0.485285, -0.5]; sequence mean = -0.4926424
    lp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    out = policy_loss(lp, torch.tensor([0.5]), torch.ones(1, 2), ref_logp=torch.tensor([[-2.0, -2.0]]), beta=0.04)
    assert out.loss.item() == pytest.approx((-0.5 + 0.04 * math.exp(-1) - 0.5) / 2, abs=1e-6)
    assert out.kl.item() == pytest.approx(math.exp(-1) / 2, abs=1e-6)
    out.loss.backward()
    # d/dlp of -A*exp(lp - sg(lp)) = -A = -0.5; d/dlp k3 = d/dlp [exp(ref-lp) - (ref-lp) - 1] = 1 - exp(ref-lp)
    # token 1: (-0.5 + 0.04*(1 - e^-1)) / 2 = -0.237358; token 2: (-0.5 + 0) / 2 = -0.25
    expected = torch.tensor([[(-0.5 + 0.04 * (1 - math.exp(-1))) / 2, -0.25]])
    assert torch.allclose(lp.grad, expected, atol=1e-6)


def test_negative_advantage_pushes_logprob_down():
    lp = torch.zeros(1, 3, requires_grad=True)
    policy_loss(lp, torch.tensor([-1.0]), torch.ones(1, 3)).loss.backward()
    assert (lp.grad > 0).all()  # gradient descent lowers logp of a below-average completion


def test_clipping_with_old_logprobs():
    # old = 0 (ratio = exp(lp)); lp = log(1.5) -> ratio 1.5 > 1 + 0.2; A = +1 -> clipped to 1.2
    # surrogate = min(1.5*1, 1.2*1) = 1.2, gradient 0 (clipped branch is constant)
    lp = torch.tensor([[math.log(1.5)]], requires_grad=True)
    out = policy_loss(lp, torch.tensor([1.0]), torch.ones(1, 1), old_logp=torch.zeros(1, 1))
    assert out.loss.item() == pytest.approx(-1.2)
    assert out.clip_fraction.item() == 1.0
    out.loss.backward()
    assert lp.grad.item() == 0.0
    # clip-higher (DAPO): eps_high = 0.28 -> bound 1.28 -> loss -1.28
    lp2 = torch.tensor([[math.log(1.5)]], requires_grad=True)
    out2 = policy_loss(lp2, torch.tensor([1.0]), torch.ones(1, 1), old_logp=torch.zeros(1, 1), epsilon_high=0.28)
    assert out2.loss.item() == pytest.approx(-1.28)
    # A < 0 and ratio 1.5: min(-1.5, -1.2) = -1.5 -> unclipped, loss 1.5, not counted as clipped
    out3 = policy_loss(lp.detach(), torch.tensor([-1.0]), torch.ones(1, 1), old_logp=torch.zeros(1, 1))
    assert out3.loss.item() == pytest.approx(1.5)
    assert out3.clip_fraction.item() == 0.0


def test_token_vs_sequence_mean_loss_differ():
    # two rows, lengths 1 and 3, A = [1, -1], ratio 1 -> token losses [-1] and [1, 1, 1]
    # sequence mean: (-1 + 1)/2 = 0; token mean: (-1 + 3)/4 = 0.5
    lp = torch.zeros(2, 3)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    adv = torch.tensor([1.0, -1.0])
    assert policy_loss(lp, adv, mask, aggregation="sequence_mean").loss.item() == pytest.approx(0.0)
    assert policy_loss(lp, adv, mask, aggregation="token_mean").loss.item() == pytest.approx(0.5)
    with pytest.raises(KeyError, match="aggregation"):
        policy_loss(lp, adv, mask, aggregation="nope")


def test_completion_mask_up_to_first_eos():
    ids = torch.tensor([[5, 9, 2, 7, 2], [5, 5, 5, 5, 5], [2, 1, 1, 1, 1]])
    mask, truncated = completion_mask(ids, [2, 3])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert truncated.tolist() == [False, True, False]


def test_repeat_visual_batch_keeps_patches_with_their_prompt():
    # two videos with 2 and 3 patches (grid products), G=2 -> patches [a a b b] per video order
    inputs = {
        "input_ids": torch.tensor([[1, 2], [3, 4]]),
        "video_grid_thw": torch.tensor([[1, 1, 2], [1, 1, 3]]),
        "pixel_values_videos": torch.arange(5).float().unsqueeze(1),  # [5, 1]
        "second_per_grid_ts": torch.tensor([1.0, 0.5]),
    }
    out = repeat_visual_batch(inputs, 2)
    assert out["input_ids"].tolist() == [[1, 2], [1, 2], [3, 4], [3, 4]]
    assert out["pixel_values_videos"].squeeze(1).tolist() == [0, 1, 0, 1, 2, 3, 4, 2, 3, 4]
    assert out["second_per_grid_ts"].tolist() == [1.0, 1.0, 0.5, 0.5]


@pytest.mark.parametrize(("cls", "kwargs", "key"), [
    ("AlgoConfig", {"epsilon_low": -1.0}, "algo.epsilon_low"),
    ("AlgoConfig", {"epsilon_low": 1.0}, "algo.epsilon_low"),
    ("AlgoConfig", {"epsilon_high": -0.1}, "algo.epsilon_high"),
    ("AlgoConfig", {"advantage_eps": 0.0}, "algo.advantage_eps"),
    ("AlgoConfig", {"max_refill_batches": -1}, "algo.max_refill_batches"),
    ("AlgoConfig", {"num_iterations": 0}, "algo.num_iterations"),
    ("RolloutConfig", {"top_p": 0.0}, "rollout.top_p"),
    ("RolloutConfig", {"top_k": -1}, "rollout.top_k"),
    ("RolloutConfig", {"repetition_penalty": 0.0}, "rollout.repetition_penalty"),
    ("RolloutConfig", {"temperature": 0.0}, "rollout.temperature"),
])
def test_out_of_range_settings_name_their_key(cls, kwargs, key):
    from museg_lit.errors import ConfigError
    from museg_lit.rl import config

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        getattr(config, cls)(**kwargs)
