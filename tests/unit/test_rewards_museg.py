"""MUSEG rewards: hand-computed values (arithmetic in comments), quirks, registry, and the real data.

Expected values were computed by hand from the formulas in DESIGN.md "Recipe facts"; where the
1e-6 stabilisers of global matching matter, the expression is written out in the test.
"""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest

import museg_lit.rewards as rewards_pkg
from museg_lit.rewards import REWARDS, resolve_reward
from museg_lit.rewards import museg as museg_mod
from museg_lit.rewards import parsing as parsing_mod
from museg_lit.rewards.museg import (
    format_no_timestamp_reward,
    format_reward,
    global_matching_reward,
    local_matching_reward,
    segment_matching_reward,
)
from museg_lit.rewards.parsing import (
    extract_answer,
    normalize_solution,
    parse_answer_segments,
    parse_segments,
)

DATA = Path(__file__).parents[2] / ".." / "shared" / "data" / "museg"


def one(fn, completion: str, gt, **columns) -> float:
    (value,) = fn([completion], [gt], **columns)
    return value


def done(answer: str, think: str = ".") -> str:
    return f"<think>{think}</think><answer>{answer}</answer>"


# ------------------------------------------------------------------------------------ parsing


def test_reward_parsing_extract_answer():
    assert extract_answer("<think>a</think><answer> 1-2 </answer>") == " 1-2 "
    assert extract_answer("<answer></answer>") == ""
    assert extract_answer("no tags") is None
    assert extract_answer("<answer>1-2</answer><answer>3-4</answer>") is None  # two of each
    assert extract_answer("<answer>1-2") is None  # no closing tag
    assert extract_answer("</answer>1-2<answer>") is None  # wrong order


def test_reward_parsing_segments():
    assert parse_segments("12.50-17.80  3-4\n5-6") == [[12.5, 17.8], [3.0, 4.0], [5.0, 6.0]]  # any whitespace
    assert parse_segments("") == []
    assert parse_segments("1-2-3") == [[1.0, 2.0]]  # MUSEG reads only t[0], t[1]
    assert parse_segments("0-0.5") == [[0.0, 0.5]]  # s == 0 allowed
    for bad in ("5-3", "3-3", "12.5", "1-", "-1-2", "a-b", "1-2,", "0-inf", "nan-1", "1 to 2"):
        assert parse_segments(bad) is None, bad
    assert parse_answer_segments(done("1-2 3-4")) == [[1.0, 2.0], [3.0, 4.0]]
    assert parse_answer_segments([{"role": "assistant", "content": done("1-2")}]) == [[1.0, 2.0]]  # TRL chat
    assert parse_answer_segments(None) is None


def test_reward_parsing_normalize_solution():
    assert normalize_solution([[1, 2], [3.5, 4]]) == [[1.0, 2.0], [3.5, 4.0]]
    assert normalize_solution([1.0, 2.0]) == [[1.0, 2.0]]  # flat pair is wrapped
    assert normalize_solution(None) == []
    with pytest.raises(ValueError, match="ground-truth"):
        normalize_solution([["a", 2]])
    with pytest.raises(ValueError, match="ground-truth"):
        normalize_solution([[1, 2, 3]])


# ------------------------------------------------------------------------------------- format


@pytest.mark.parametrize(
    ("completion", "stage1", "stage2"),
    [
        # "12.50" -> str(12.5) = "12.5" occurs once in the think, "17.80" -> "17.8" once -> 1.0
        ("<think>It starts at 12.5s and ends at 17.8s.</think><answer>12.50-17.80</answer>", 1.0, 1.0),
        # no timestamp in the think -> 0.6 in stage 1 only
        ("<think>The man jumps.</think><answer>12.50-17.80</answer>", 0.6, 1.0),
        # one of the two numbers missing from the think is enough for 0.6
        ("<think>from 12.5</think><answer>12.5-17.8</answer>", 0.6, 1.0),
        # item without "-": t[1] raises IndexError -> 0.2 (before any timestamp check)
        ("<think>12.5 17.8</think><answer>12.5 to 17.8</answer>", 0.2, 0.2),
        ("<think>.</think><answer>12.5-</answer>", 0.2, 0.2),  # float('') fails -> 0.2
        ("<think>.</think><answer>1-2, 3-4</answer>", 0.2, 0.2),  # float('2,') fails -> 0.2
        # whitespace around the whole completion and between the blocks is allowed
        ("  \n<think>1.0 2.0</think>\n <answer> 1-2 </answer>\n", 1.0, 1.0),
        # text before <think> / after </answer>, missing or duplicated tags -> 0
        ("Sure! <think>1.0 2.0</think><answer>1-2</answer>", 0.0, 0.0),
        ("<think>1.0 2.0</think><answer>1-2</answer> done", 0.0, 0.0),
        ("<answer>1-2</answer>", 0.0, 0.0),
        ("<think>1.0 <think> 2.0</think><answer>1-2</answer>", 0.0, 0.0),
        ("<think>1.0 2.0</think><answer>1-2</answer><answer>1-2</answer>", 0.0, 0.0),
        ("<answer>1-2</answer><think>1.0 2.0</think>", 0.0, 0.0),  # wrong block order
        ("", 0.0, 0.0),
    ],
)
def test_format_reward_cases(completion, stage1, stage2):
    assert one(format_reward, completion, [[0, 1]]) == stage1
    assert one(format_no_timestamp_reward, completion, [[0, 1]]) == stage2


def test_format_reward_quirks():
    # Quirk 1: an empty answer has no items -> no 0.2, no timestamp to check -> 1.0.
    assert one(format_reward, "<think>nothing</think><answer></answer>", [[0, 1]]) == 1.0
    assert one(format_reward, "<think>nothing</think><answer>  </answer>", [[0, 1]]) == 1.0
    # Quirk 2: "1-2-3" reads t[0] = 1, t[1] = 2 only; "3" is never checked.
    assert one(format_reward, done("1-2-3", "1.0 and 2.0"), [[0, 1]]) == 1.0
    # No s < e check in format: "5-3" is well-formed here (matching rewards give it 0).
    assert one(format_reward, done("5-3", "5.0 3.0"), [[0, 1]]) == 1.0
    # Quirk 3: the "." of str(float(x)) is a regex wildcard: "1.0" matches "110", "2.0" matches "290".
    assert one(format_reward, done("1-2", "from 110 to 290"), [[0, 1]]) == 1.0
    # Integers in the answer are checked as "12.0": "12" alone does not match -> 0.6 ...
    assert one(format_reward, done("12-17", "at 12 to 17 s"), [[0, 1]]) == 0.6
    # ... while "12.00" contains "12.0" and "17.00" contains "17.0" -> 1.0.
    assert one(format_reward, done("12-17", "at 12.00 to 17.00 s"), [[0, 1]]) == 1.0


def test_format_reward_count_bounds():
    # A number must occur between 1 and 10 times (inclusive) in the think.
    ten, eleven = " ".join(["12.5"] * 10), " ".join(["12.5"] * 11)
    assert one(format_reward, done("12.5-17.8", ten + " 17.8"), [[0, 1]]) == 1.0  # 10 hits
    assert one(format_reward, done("12.5-17.8", eleven + " 17.8"), [[0, 1]]) == 0.6  # 11 hits
    assert one(format_no_timestamp_reward, done("12.5-17.8", eleven), [[0, 1]]) == 1.0


def test_format_reward_batch_and_chat_messages():
    completions = [done("1-2", "1.0 2.0"), "junk", [{"role": "assistant", "content": done("1-2", "1.0 2.0")}]]
    assert format_reward(completions, [[[0, 1]]] * 3, task=["tvg"] * 3, idx=[0, 1, 2]) == [1.0, 0.0, 1.0]


# ------------------------------------------------------------------------------ global matching


def test_global_matching_merges_predictions():
    # gt 0-10, 20-30 (sum len 20); preds 5-15, 12-25 -> sorted, 15 >= 12 -> merged 5-25 (len 20)
    # overlap = |0-10 ∩ 5-25| + |20-30 ∩ 5-25| = 5 + 5 = 10
    p = 10 / (20 + 1e-6)  # precision
    r = 10 / (20 + 1e-6)  # recall
    expected = 2 * p * r / (p + r + 1e-6)  # ~ 0.4999995
    got = one(global_matching_reward, done("5-15 12-25"), [[0, 10], [20, 30]])
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == pytest.approx(0.4999995, abs=1e-7)
    # the order of predictions does not matter (they are sorted first)
    assert one(global_matching_reward, done("12-25 5-15"), [[0, 10], [20, 30]]) == pytest.approx(expected, rel=1e-12)


def test_global_matching_touching_and_duplicate_predictions_are_merged():
    # 0-5 and 5-10 touch (5 >= 5) -> merged 0-10; duplicates merge too, so overlap is not double counted
    p = 10 / (10 + 1e-6)
    expected = 2 * p * p / (p + p + 1e-6)  # ~ 0.9999994
    assert one(global_matching_reward, done("0-5 5-10"), [[0, 10]]) == pytest.approx(expected, rel=1e-12)
    assert one(global_matching_reward, done("0-10 0-10"), [[0, 10]]) == pytest.approx(expected, rel=1e-12)


def test_global_matching_partial():
    # gt 0-10; pred 5-20: overlap 5; P = 5 / 15, R = 5 / 10 -> F1 = 2 * (1/3) * (1/2) / (5/6) = 0.4
    p, r = 5 / (15 + 1e-6), 5 / (10 + 1e-6)
    assert one(global_matching_reward, done("5-20"), [[0, 10]]) == pytest.approx(2 * p * r / (p + r + 1e-6))
    assert one(global_matching_reward, done("5-20"), [[0, 10]]) == pytest.approx(0.4, abs=1e-6)


def test_global_matching_zero_cases():
    gt = [[0, 10]]
    assert one(global_matching_reward, done("20-30"), gt) == 0.0  # no overlap: P = R = 0 -> 0 / 1e-6
    assert one(global_matching_reward, done(""), gt) == 0.0  # empty answer: nothing selected
    assert one(global_matching_reward, done("5-3"), gt) == 0.0  # s >= e
    assert one(global_matching_reward, done("0-10 12"), gt) == 0.0  # one bad item spoils the answer
    assert one(global_matching_reward, "0-10", gt) == 0.0  # no answer tags
    assert one(global_matching_reward, done("0-inf"), gt) == 0.0  # non-finite
    assert one(global_matching_reward, done("0-10"), []) == 0.0  # no ground truth (MUSEG: gts[0] fails)


def test_global_matching_overlapping_ground_truth_quirk():
    # Ground truth is not merged: gt 0-10 and 5-15 (sum len 20) vs pred 0-15 (len 15):
    # overlap = 10 + 10 = 20 > 15 -> P = 20/15 = 4/3, R = 1 -> F1 = 2 * (4/3) / (7/3) = 8/7 > 1.
    p, r = 20 / (15 + 1e-6), 20 / (20 + 1e-6)
    got = one(global_matching_reward, done("0-15"), [[0, 10], [5, 15]])
    assert got == pytest.approx(2 * p * r / (p + r + 1e-6), rel=1e-12)
    assert got == pytest.approx(8 / 7, abs=1e-5)


# ------------------------------------------------------------------------------- local matching


def test_local_matching_giou_mapping():
    # gt 0-10, pred 5-20: I = 5, U = 10 + 15 - 5 = 20, C = 20 - 0 = 20 -> (1 + 5/20 - 0/20) / 2 = 0.625
    assert one(local_matching_reward, done("5-20"), [[0, 10]]) == 0.625
    # gt 0-10, pred 15-20 (disjoint): I = 0, U = 15, C = 20 -> (1 + 0 - 5/20) / 2 = 0.375
    assert one(local_matching_reward, done("15-20"), [[0, 10]]) == 0.375
    # gt 0-10, pred 2-4 (nested): I = 2, U = 10, C = 10 -> (1 + 0.2 - 0) / 2 = 0.6
    assert one(local_matching_reward, done("2-4"), [[0, 10]]) == pytest.approx(0.6)
    # identical: IoU 1, C = U -> 1
    assert one(local_matching_reward, done("0-10"), [[0, 10]]) == 1.0


def test_local_matching_pairs_in_given_order():
    # gt [0-10, 20-30] vs preds [20-30, 0-10] (swapped, no sorting):
    # pair 1: gt 0-10 / pred 20-30: I = 0, U = 20, C = 30 -> (1 - 10/30) / 2 = 1/3; pair 2 is symmetric
    got = one(local_matching_reward, done("20-30 0-10"), [[0, 10], [20, 30]])
    assert got == pytest.approx(1 / 3, rel=1e-12)
    # global matching is order-free and gives ~1 for the same answer
    assert one(global_matching_reward, done("20-30 0-10"), [[0, 10], [20, 30]]) == pytest.approx(1, abs=1e-5)


def test_local_matching_pads_missing_predictions():
    # gt [0-10, 20-30], one pred 0-10 -> preds padded with [1e9, 1e9+1]
    # pair 1: identical -> 1
    # pair 2: gt 20-30 / pad: I = 0, U = 10 + 1 = 11, C = 1e9 + 1 - 20 = 999999981
    #         -> (1 + 0 - (999999981 - 11) / 999999981) / 2 = 11 / 999999981 / 2 ~ 5.5e-9
    pair2 = (1 + 0 - (999999981 - 11) / 999999981) / 2
    got = one(local_matching_reward, done("0-10"), [[0, 10], [20, 30]])
    assert got == pytest.approx((1 + pair2) / 2, rel=1e-12)
    assert got == pytest.approx(0.5 + 2.75e-9, abs=1e-12)


def test_local_matching_pads_missing_ground_truth():
    # gt [0-10], preds [0-10, 40-50] -> gt padded with [1e9, 1e9+1]
    # pair 2: pad / pred 40-50: I = 0, U = 1 + 10 = 11, C = 1e9 + 1 - 40 = 999999961 -> 11 / 999999961 / 2
    pair2 = (1 + 0 - (999999961 - 11) / 999999961) / 2
    got = one(local_matching_reward, done("0-10 40-50"), [[0, 10]])
    assert got == pytest.approx((1 + pair2) / 2, rel=1e-12)


def test_local_matching_empty_answer_is_tiny_not_zero():
    # Quirk: an empty answer pads preds with [1e9, 1e9+1]: gt 0-10 -> U = 11, C = 1e9 + 1
    # -> (1 - (1e9 + 1 - 11) / (1e9 + 1)) / 2 = 11 / (1e9 + 1) / 2 ~ 5.5e-9
    got = one(local_matching_reward, done(""), [[0, 10]])
    assert got == pytest.approx(11 / (1e9 + 1) / 2, rel=1e-6)
    assert 0 < got < 1e-8


def test_local_matching_zero_cases():
    assert one(local_matching_reward, done("5-3"), [[0, 10]]) == 0.0
    assert one(local_matching_reward, "<think>.</think>", [[0, 10]]) == 0.0
    assert one(local_matching_reward, done(""), []) == 0.0  # nothing to pair (MUSEG: 0 / 0 -> 0)


# ----------------------------------------------------------------------------- segment matching


def test_segment_matching_is_global_plus_local():
    # gt 0-10, pred 5-20: local 0.625; global P = 5/15, R = 5/10 -> ~0.4; total ~1.025
    comps, gts = [done("5-20"), done("0-10"), "bad"], [[[0, 10]]] * 3
    g, loc = global_matching_reward(comps, gts), local_matching_reward(comps, gts)
    s = segment_matching_reward(comps, gts, task=["tvg"] * 3, duration=[30.0] * 3)
    assert s == [a + b for a, b in zip(g, loc, strict=True)]
    assert s[0] == pytest.approx(1.025, abs=1e-6)
    assert s[1] == pytest.approx(2.0, abs=1e-5)
    assert s[2] == 0.0


# ------------------------------------------------------------------------------------ registry


def test_reward_registry_names():
    assert set(REWARDS) == {
        "format", "format_no_timestamp", "global_matching", "local_matching", "segment_matching", "iou", "cendist",
    }
    assert REWARDS["format"] is format_reward
    assert REWARDS["format_no_timestamp"] is format_no_timestamp_reward


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_reward_signature_ignores_unknown_columns(name):
    out = REWARDS[name](
        [done("1-2", "1.0 2.0"), "x"], [[[1, 2]], [[0, 5]]],
        task=["tvg", "tal"], duration=[10.0, None], idx=[0, 1], problem=["p", "q"], unknown=[1, 2],
    )
    assert isinstance(out, list) and len(out) == 2 and all(isinstance(v, float) for v in out)


def test_resolve_reward():
    assert resolve_reward("iou") is REWARDS["iou"]
    assert resolve_reward("museg_lit.rewards.museg:local_matching_reward") is local_matching_reward
    assert resolve_reward("museg_lit.rewards.museg.local_matching_reward") is local_matching_reward
    assert resolve_reward("math:sqrt").__name__ == "sqrt"
    with pytest.raises(ValueError, match="'no_such_reward'"):
        resolve_reward("no_such_reward")
    with pytest.raises(ValueError, match="'no_such_pkg.mod:fn'"):
        resolve_reward("no_such_pkg.mod:fn")
    with pytest.raises(ValueError, match="'museg_lit.rewards.museg:nope'"):
        resolve_reward("museg_lit.rewards.museg:nope")
    with pytest.raises(ValueError, match="not callable"):
        resolve_reward("museg_lit.rewards.museg:_PAD")
    with pytest.raises(ValueError):
        resolve_reward("")


def test_reward_docstring_examples():
    for module in (museg_mod, parsing_mod, rewards_pkg):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


# ---------------------------------------------------------------------------------- real data


def _stage1_rows(step: int = 14) -> list[dict]:
    path = DATA / "stage_1.jsonl"
    if not path.exists():
        pytest.skip(f"MUSEG data not found at {path}")
    with path.open() as f:
        return [json.loads(line) for i, line in enumerate(f) if i % step == 0]  # 400 of 5,600 rows


def _as_completion(segments) -> str:
    answer = " ".join(f"{s:.2f}-{e:.2f}" for s, e in segments)
    return f"<think>The event happens at {answer}.</think><answer>{answer}</answer>"


def test_stage1_ground_truth_scores_one_as_answer():
    rows = _stage1_rows()
    usable = [
        r for r in rows
        if all(s < e for s, e in r["solution"])  # two rows have zero-length segments
        and all(round(x, 2) == x for seg in r["solution"] for x in seg)  # exact with 2 decimals
        and all(a[1] < b[0] for a, b in zip(r["solution"], r["solution"][1:], strict=False))  # disjoint (54 rows overlap)
    ]
    assert len(usable) >= 300
    completions, solution = [_as_completion(r["solution"]) for r in usable], [r["solution"] for r in usable]
    # global: P = R = L / (L + 1e-6) with L >= 0.1 s of ground truth -> >= 1 - 2e-5
    assert global_matching_reward(completions, solution) == pytest.approx([1.0] * len(usable), abs=1e-4)
    # local: identical pairs -> IoU 1, C = U (up to the last ulp of the union's rounding)
    assert local_matching_reward(completions, solution) == pytest.approx([1.0] * len(usable), abs=1e-12)
    assert format_reward(completions, solution) == [1.0] * len(usable)
    assert format_no_timestamp_reward(completions, solution) == [1.0] * len(usable)


def test_stage1_overlapping_ground_truth_exceeds_one():
    path = DATA / "stage_1.jsonl"
    if not path.exists():
        pytest.skip(f"MUSEG data not found at {path}")
    with path.open() as f:
        row = next(r for r in map(json.loads, f) if r["idx"] == 282)
    # [79.63, 137.61] and [135.77, 143.21] overlap by 1.84 s: the merged prediction is 1.84 s shorter
    # than the summed ground truth, so P > 1 and global matching > 1 (unmerged-gt quirk).
    gt = row["solution"]
    assert gt[1][1] > gt[2][0]
    assert one(global_matching_reward, _as_completion(gt), gt) > 1.0
    assert one(local_matching_reward, _as_completion(gt), gt) == pytest.approx(1.0)
