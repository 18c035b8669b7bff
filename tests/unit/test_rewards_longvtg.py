"""LongVTG-R1 rewards (reconstruction): single-segment IoU and CenDist, hand-computed values."""

from __future__ import annotations

import doctest
import math

import pytest

from museg_lit.rewards import longvtg as longvtg_mod
from museg_lit.rewards.longvtg import cendist_reward, iou_reward


def done(answer: str) -> str:
    return f"<think>.</think><answer>{answer}</answer>"


def one(fn, answer: str, gt, **columns) -> float:
    (value,) = fn([done(answer)], [gt], **{k: [v] for k, v in columns.items()})
    return value


# ----------------------------------------------------------------------------------------- iou


@pytest.mark.parametrize(
    ("answer", "gt", "expected"),
    [
        ("10-20", [[10, 20]], 1.0),  # identical
        ("15-25", [[10, 20]], 5 / 15),  # I = 15..20 = 5, U = 10..25 = 15
        ("12-14", [[10, 20]], 2 / 10),  # nested: I = 2, U = 10
        ("0-30", [[10, 20]], 10 / 30),  # covering: I = 10, U = 30
        ("20-30", [[10, 20]], 0.0),  # touching: I = 0
        ("30-40", [[10, 20]], 0.0),  # disjoint
        ("15-25 10-20", [[10, 20]], 5 / 15),  # only the first prediction counts
        ("10-20", [[0, 5], [10, 20]], 0.0),  # ... against the first ground truth only: 10-20 vs 0-5
        ("10-20", [10, 20], 1.0),  # a flat ground-truth pair is accepted
    ],
)
def test_iou_reward_values(answer, gt, expected):
    assert one(iou_reward, answer, gt) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("answer", ["", "20-10", "10-10", "ten-20", "10-20 5", "10-inf"])
def test_iou_reward_malformed_or_empty_is_zero(answer):
    assert one(iou_reward, answer, [[10, 20]]) == 0.0


def test_iou_reward_needs_answer_tags():
    assert iou_reward(["10-20", "<answer>10-20</answer><answer>10-20</answer>"], [[[10, 20]]] * 2) == [0.0, 0.0]
    assert iou_reward([done("10-20")], [[]]) == [0.0]  # no ground truth


# ------------------------------------------------------------------------------------- cendist


def test_cendist_with_duration():
    # gt 10-20 -> c = 15; pred 20-30 -> c = 25; |dc| = 10; duration 100 -> 1 - 10/100 = 0.9
    assert one(cendist_reward, "20-30", [[10, 20]], duration=100.0) == pytest.approx(0.9)
    # the reward stays informative without overlap, unlike IoU (which is 0 here)
    assert one(iou_reward, "20-30", [[10, 20]]) == 0.0
    # same centre, different length: 14-16 (c = 15) -> 1 - 0/100 = 1
    assert one(cendist_reward, "14-16", [[10, 20]], duration=100.0) == 1.0
    # far away: pred 90-100 (c = 95), |dc| = 80, duration 50 -> 1 - 80/50 = -0.6 -> clipped to 0
    assert one(cendist_reward, "90-100", [[10, 20]], duration=50.0) == 0.0
    # only the first prediction: 0-10 (c = 5), |dc| = 10, duration 40 -> 1 - 10/40 = 0.75
    assert one(cendist_reward, "0-10 14-16", [[10, 20]], duration=40) == pytest.approx(0.75)


@pytest.mark.parametrize("duration", [None, 0, 0.0, -5.0, math.nan, math.inf, "abc"])
def test_cendist_invalid_duration_falls_back_to_max_end(duration):
    # fallback duration = max(gt end 20, pred end 30) = 30 -> 1 - 10/30 = 2/3
    assert one(cendist_reward, "20-30", [[10, 20]], duration=duration) == pytest.approx(2 / 3, rel=1e-12)


def test_cendist_missing_duration_column():
    # no `duration` column at all: fallback max(20, 18) = 20 for pred 16-18 (c = 17): 1 - 2/20 = 0.9
    assert cendist_reward([done("16-18")], [[[10, 20]]]) == [pytest.approx(0.9)]
    # numeric strings are accepted: duration "40" -> 1 - 2/40 = 0.95
    assert cendist_reward([done("16-18")], [[[10, 20]]], duration=["40"]) == [pytest.approx(0.95)]


@pytest.mark.parametrize("answer", ["", "30-20", "abc", "1-2 x"])
def test_cendist_malformed_or_empty_is_zero(answer):
    assert one(cendist_reward, answer, [[10, 20]], duration=100.0) == 0.0


def test_longvtg_rewards_batch_ignore_unknown_columns_and_check_lengths():
    comps = [done("10-20"), done("15-25"), "junk"]
    gts = [[[10, 20]]] * 3
    cols = dict(duration=[100.0, 100.0, 100.0], task=["tvg"] * 3, idx=[0, 1, 2], extra=["x"] * 3)
    assert iou_reward(comps, gts, **cols) == [1.0, pytest.approx(1 / 3), 0.0]
    # 1 - 0/100 = 1; centres 15 vs 20 -> 1 - 5/100 = 0.95; junk -> 0
    assert cendist_reward(comps, gts, **cols) == [1.0, pytest.approx(0.95), 0.0]
    with pytest.raises(ValueError):
        iou_reward(comps, gts[:2])
    with pytest.raises(ValueError):
        cendist_reward(comps, gts, duration=[1.0])


def test_longvtg_docstring_examples():
    result = doctest.testmod(longvtg_mod)
    assert result.failed == 0 and result.attempted > 0
