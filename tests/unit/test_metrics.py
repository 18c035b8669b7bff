"""Grounding metrics (MUSEG evaluation): parsing, hand-computed tvg/tal values, float32 quirks,
the fraction convention, real ground truth, and a 10k-sample run."""

from __future__ import annotations

import doctest
import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from museg_lit.evaluation import metrics as metrics_mod
from museg_lit.evaluation.metrics import HEADLINE_METRIC, grounding_metrics, parse_prediction, sample_iou

DATA = Path(__file__).parents[2] / ".." / "shared" / "data" / "museg"
TVG_KEYS = {"tot", "m_iou", "f1_single_0.1", "f1_single_0.3", "f1_single_0.5", "f1_single_0.7", "mean_f1_single"}
TAL_KEYS = {"tot", "f1_multi_0.1", "f1_multi_0.3", "f1_multi_0.5", "f1_multi_0.7", "mean_f1_multi"}


def ans(text: str) -> str:
    return f"<think>reasoning 1 2 3</think><answer>{text}</answer>"


# ------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (ans("12.50-17.80"), [[12.5, 17.8]]),
        (ans("0-5 7.5-9"), [[0.0, 5.0], [7.5, 9.0]]),
        (ans("from 3 to 9.5 seconds"), [[3.0, 9.5]]),  # any text between numbers
        (ans("-5--10"), [[5.0, 10.0]]),  # minus signs are not part of \d+\.*\d*
        (ans("1. 2"), [[1.0, 2.0]]),  # "1." is a number
        (ans(" 3-4 "), [[3.0, 4.0]]),
        ("<answer>1-2</answer> trailing <think>", [[1.0, 2.0]]),  # only the answer tags are counted
        (ans("1-2 3"), None),  # odd count
        (ans("5-3"), None),  # s >= e
        (ans("0-5 4-4"), None),  # any pair with s >= e spoils the prediction
        (ans("1..5-7"), None),  # "1..5" matches the regex but float() rejects it
        (ans(""), None),  # no numbers
        (ans("none"), None),
        ("12.5-17.8", None),  # no answer tags
        ("<answer>1-2</answer><answer>3-4</answer>", None),  # two answers
        ("</answer>1-2<answer>", None),  # wrong order
    ],
)
def test_metric_parse_prediction(output, expected):
    assert parse_prediction(output) == expected


# --------------------------------------------------------------------------------------- tvg


def test_metric_tvg_hand_computed():
    gt = [[[0, 10]]] * 6
    outputs = [
        ans("0-5"),  # IoU 5/10 = 0.5
        ans("5-15"),  # I = 5, U = 15 -> 1/3
        ans("0-10"),  # 1
        ans("20-30"),  # 0
        "no answer",  # no prediction -> 0
        ans("0-7 8-9"),  # first pred only: 7/10, float32(0.7) = 0.69999999 (see the quirk test)
    ]
    m = grounding_metrics(outputs, gt, "tvg")
    assert set(m) == TVG_KEYS
    assert m["tot"] == 6
    # m_iou = (0.5 + 1/3 + 1 + 0 + 0 + 0.7) / 6 = 2.5333.../6 = 0.42222... (float32 IoUs -> rel 1e-6)
    assert m["m_iou"] == pytest.approx((0.5 + 1 / 3 + 1 + 0 + 0 + 0.7) / 6, rel=1e-6)
    # >= 0.1: {0.5, 1/3, 1, 0.7} -> 4/6; >= 0.3: same 4/6; >= 0.5: {0.5, 1, 0.7} -> 3/6;
    # >= 0.7: {1} only -> 1/6 (0.7 in float32 is just below 0.7)
    assert m["f1_single_0.1"] == 4 / 6
    assert m["f1_single_0.3"] == 4 / 6
    assert m["f1_single_0.5"] == 3 / 6
    assert m["f1_single_0.7"] == 1 / 6
    # mean = (4 + 4 + 3 + 1) / 6 / 4 = 12 / 24 = 0.5
    assert m["mean_f1_single"] == 0.5


def test_metric_tvg_float32_threshold_quirk():
    # MUSEG computes IoU in float32 (nncore on torch.Tensor) and compares it after .item() in float64:
    # 7/10 -> float32 0.699999988 < 0.7 -> not counted at 0.7; 3/10 -> float32 0.300000012 >= 0.3.
    m = grounding_metrics([ans("0-7"), ans("0-3")], [[[0, 10]], [[0, 10]]], "tvg")
    assert m["f1_single_0.7"] == 0.0
    assert m["f1_single_0.3"] == 1.0  # both 0.7 and 0.3 count
    assert m["f1_single_0.5"] == 0.5
    assert sample_iou(ans("0-7"), [[0, 10]]) == float(np.float32(0.7))


# --------------------------------------------------------------------------------------- tal


def test_metric_tal_hand_computed():
    outputs = [
        ans("0-10 40-50"),
        ans("0-10 20-30"),
        ans("0-4 5-10"),
        ans("3"),  # odd count -> no prediction
    ]
    gts = [[[0, 10], [20, 30]], [[0, 10], [20, 30]], [[0, 10]], [[0, 10]]]
    m = grounding_metrics(outputs, gts, "tal")
    assert set(m) == TAL_KEYS and m["tot"] == 4
    # sample 1: IoU gt x pred = [[1, 0], [0, 0]]; recall = 1/2 (gt 20-30 unmatched), precision = 1/2
    #           -> F1 = 2 * 0.5 * 0.5 / 1 = 0.5 at every threshold
    # sample 2: perfect -> 1 at every threshold
    # sample 3: gt 0-10 vs preds 0-4 (IoU 0.4), 5-10 (IoU 0.5):
    #           t = 0.1, 0.3: R = 1, P = 2/2 = 1 -> 1; t = 0.5: R = 1, P = 1/2 -> 2 * 0.5 / 1.5 = 2/3;
    #           t = 0.7: max IoU 0.5 < 0.7 -> 0
    # sample 4: no prediction -> 0
    assert m["f1_multi_0.1"] == pytest.approx((0.5 + 1 + 1 + 0) / 4)  # 0.625
    assert m["f1_multi_0.3"] == pytest.approx((0.5 + 1 + 1 + 0) / 4)
    assert m["f1_multi_0.5"] == pytest.approx((0.5 + 1 + 2 / 3 + 0) / 4)  # 0.541666...
    assert m["f1_multi_0.7"] == pytest.approx((0.5 + 1 + 0 + 0) / 4)  # 0.375
    # mean = (sum of the four per-threshold sums) / 4 samples / 4 thresholds
    assert m["mean_f1_multi"] == pytest.approx((2.5 + 2.5 + (0.5 + 1 + 2 / 3) + 1.5) / 4 / 4)


def test_metric_tal_recall_and_precision_are_asymmetric():
    # gt [0-10, 20-30, 40-50], one pred 0-10: R = 1/3, P = 1/1 -> F1 = 2 * (1/3) / (4/3) = 0.5
    m = grounding_metrics([ans("0-10")], [[[0, 10], [20, 30], [40, 50]]], "tal")
    assert m["f1_multi_0.5"] == pytest.approx(0.5, rel=1e-6)  # R is float32(1/3), as in torch's mean
    # gt 0-10, preds 0-10 and 0-10 (duplicates both match): R = 1, P = 1 -> 1
    assert grounding_metrics([ans("0-10 0-10")], [[[0, 10]]], "tal")["f1_multi_0.7"] == 1.0


def test_metric_tal_float32_threshold_quirk():
    # tal compares the float32 tensor with the threshold in float32: IoU 7/10 counts at 0.7 here,
    # although the same IoU does not count in f1_single_0.7 (see the tvg test).
    assert grounding_metrics([ans("0-7")], [[[0, 10]]], "tal")["f1_multi_0.7"] == 1.0
    assert grounding_metrics([ans("0-7")], [[[0, 10]]], "tvg")["f1_single_0.7"] == 0.0


# ---------------------------------------------------------------------------- conventions, API


def test_metric_values_are_fractions_not_percentages():
    # A perfect run gives 1.0 (not 100); the README table's 59.7 (Charades-STA, MUSEG-7B) is m_iou 0.597.
    perfect = grounding_metrics([ans("0-10")], [[[0, 10]]], "tvg")
    assert perfect["m_iou"] == 1.0 and perfect["mean_f1_single"] == 1.0
    assert grounding_metrics([ans("0-10")], [[[0, 10]]], "tal")["mean_f1_multi"] == 1.0
    assert HEADLINE_METRIC == {"tvg": "m_iou", "tal": "mean_f1_multi"}


def test_metric_errors():
    with pytest.raises(ValueError, match="task"):
        grounding_metrics([ans("0-1")], [[[0, 1]]], "vqa")
    with pytest.raises(ValueError, match="groundtruths"):
        grounding_metrics([ans("0-1")], [[[0, 1]], [[0, 1]]], "tvg")
    with pytest.raises(ValueError, match="at least one"):
        grounding_metrics([], [], "tal")
    with pytest.raises(ValueError, match=r"groundtruths\[1\]"):
        grounding_metrics([ans("0-1")] * 2, [[[0, 1]], []], "tvg")
    with pytest.raises(ValueError, match=r"groundtruths\[0\]"):
        grounding_metrics([ans("0-1")], [[["a", 1]]], "tvg")


def test_metric_flat_groundtruth_pair_is_accepted():
    assert grounding_metrics([ans("0-10")], [[0, 10]], "tvg")["m_iou"] == 1.0


def test_metric_sample_iou_matches_m_iou():
    rng = random.Random(0)
    outputs, gts = [], []
    for _ in range(50):
        s = rng.uniform(0, 50)
        gts.append([[s, s + rng.uniform(1, 20)]])
        a = rng.uniform(0, 60)
        outputs.append(rng.choice([ans(f"{a:.2f}-{a + rng.uniform(0.5, 20):.2f}"), "garbage"]))
    per_sample = [sample_iou(o, g) for o, g in zip(outputs, gts, strict=True)]
    assert grounding_metrics(outputs, gts, "tvg")["m_iou"] == pytest.approx(sum(per_sample) / 50, rel=1e-12)
    assert all(0.0 <= v <= 1.0 for v in per_sample)
    assert sample_iou("garbage", [[0, 1]]) == 0.0


def test_metric_docstring_examples():
    result = doctest.testmod(metrics_mod)
    assert result.failed == 0 and result.attempted > 0


# --------------------------------------------------------------------------- properties, scale

_out = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(st.sampled_from(["<answer>", "</answer>", "-", " ", ".", "1e40"]), st.integers(0, 10**50).map(str),
                       st.floats(0, 1e4).map(lambda x: f"{x:.2f}")), max_size=10).map("".join),
)
_gt = st.lists(st.tuples(st.floats(0, 1e4), st.floats(0, 1e3)).map(lambda t: [t[0], t[0] + t[1]]), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_out, _gt), min_size=1, max_size=6), st.sampled_from(["tvg", "tal"]))
def test_metric_never_raises_on_outputs_and_stays_in_unit_interval(batch, task):
    outputs, gts = [o for o, _ in batch], [g for _, g in batch]
    m = grounding_metrics(outputs, gts, task)
    assert m["tot"] == len(batch)
    assert all(0.0 <= v <= 1.0 for k, v in m.items() if k != "tot"), m


def test_metric_runs_on_10k_samples():
    rng = np.random.default_rng(0)
    n = 10_000
    outputs, gts = [], []
    for i in range(n):
        k = int(rng.integers(1, 4))
        starts = np.sort(rng.uniform(0, 100, size=k))
        gts.append([[float(s), float(s + rng.uniform(1, 10))] for s in starts])
        p = starts + rng.normal(0, 2, size=k)
        outputs.append(ans(" ".join(f"{max(a, 0):.2f}-{max(a, 0) + 5:.2f}" for a in p)) if i % 10 else "junk")
    for task in ("tvg", "tal"):
        m = grounding_metrics(outputs, gts, task)
        assert m["tot"] == n
        assert 0.0 < m[HEADLINE_METRIC[task]] < 1.0


# ---------------------------------------------------------------------------------- real data


@pytest.mark.parametrize(("name", "task"), [("charades_sta.json", "tvg"), ("thumos14.json", "tal")])
def test_metric_real_ground_truth_as_output_is_perfect(name, task):
    path = DATA / name
    if not path.exists():
        pytest.skip(f"MUSEG eval data not found at {path}")
    data = json.loads(path.read_text())
    gts = [d["groundtruth"] for d in data]
    outputs = [ans(" ".join(f"{s!r}-{e!r}" for s, e in g)) for g in gts]
    m = grounding_metrics(outputs, gts, task)
    assert m["tot"] == len(data)
    assert all(v == 1.0 for k, v in m.items() if k != "tot"), m
