"""Property tests (hypothesis): no reward raises on any text, and each stays in its documented range.

Ranges: format in {0, 0.2, 0.6, 1.0}; format_no_timestamp in {0, 0.2, 1.0}; local_matching, iou and
cendist in [0, 1]; global_matching in [0, 1] for disjoint ground truth (overlapping ground truth can
exceed 1, a MUSEG quirk tested in test_rewards_museg.py); segment_matching in [0, 2].
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from museg_lit.rewards import REWARDS

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------- strategies

_number = st.one_of(
    st.floats(min_value=0, max_value=1e6, allow_nan=False).map(lambda x: f"{x:.2f}"),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),  # "1e+300", "-0.0", "nan", "inf"
    st.integers(min_value=-5, max_value=10**12).map(str),
    st.sampled_from(["", "1..2", "1_0", "١٢", "0", "110", ".", "-", "1e999", "e"]),
)
_item = st.one_of(
    st.tuples(_number, _number).map("-".join),
    st.tuples(_number, _number, _number).map("-".join),
    _number,
    st.text(max_size=6),
)
_answer = st.lists(_item, max_size=6).map(" ".join)
_think = st.lists(st.one_of(_number, st.text(max_size=8), st.sampled_from(["(", "[", "*", "\\", "?"])), max_size=12).map(
    "".join
)
_tag = st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "", " ", "\n"])
_structured = st.tuples(_tag, _think, _tag, _tag, _answer, _tag, _tag).map(
    lambda t: f"{t[0]}<think>{t[1]}</think>{t[2]}{t[3]}<answer>{t[4]}</answer>{t[5]}{t[6]}"
)
_tag_soup = st.lists(st.one_of(_tag, _number, st.text(max_size=4)), max_size=20).map("".join)
completion_text = st.one_of(st.text(), _tag_soup, _structured)

_finite = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)


@st.composite
def disjoint_solution(draw) -> list[list[float]]:
    """1-5 ground-truth segments, sorted and non-overlapping (they may touch or have zero length)."""
    n = draw(st.integers(min_value=1, max_value=5))
    points = sorted(draw(st.lists(_finite, min_size=2 * n, max_size=2 * n)))
    return [[points[2 * i], points[2 * i + 1]] for i in range(n)]


any_solution = st.lists(st.tuples(_finite, _finite).map(sorted).map(list), min_size=0, max_size=5)
duration = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**6), st.just("x"))

RANGES = {
    "format": lambda v: v in {0.0, 0.2, 0.6, 1.0},
    "format_no_timestamp": lambda v: v in {0.0, 0.2, 1.0},
    "global_matching": lambda v: 0.0 <= v <= 1.0,
    "local_matching": lambda v: 0.0 <= v <= 1.0,
    "segment_matching": lambda v: 0.0 <= v <= 2.0,
    "iou": lambda v: 0.0 <= v <= 1.0,
    "cendist": lambda v: 0.0 <= v <= 1.0,
}


def _call_all(completions, solution, durations):
    columns = dict(duration=durations, task=["tvg"] * len(completions), idx=list(range(len(completions))))
    out = {}
    for name, fn in REWARDS.items():
        values = fn(completions, solution, **columns)
        assert isinstance(values, list) and len(values) == len(completions), name
        assert all(isinstance(v, float) and not math.isnan(v) for v in values), (name, values)
        out[name] = values
    return out


# ------------------------------------------------------------------------------------ properties


def test_reward_ranges_are_the_documented_ones():
    assert set(RANGES) == set(REWARDS)


@SETTINGS
@given(st.lists(st.tuples(completion_text, disjoint_solution(), duration), min_size=1, max_size=4))
def test_rewards_never_raise_and_stay_in_range(batch):
    completions, solution, durations = (list(x) for x in zip(*batch, strict=True))
    out = _call_all(completions, solution, durations)
    for name, values in out.items():
        for v, c in zip(values, completions, strict=True):
            assert RANGES[name](v), (name, v, c)
    # structure between the rewards
    for f, f_nt in zip(out["format"], out["format_no_timestamp"], strict=True):
        assert f == f_nt or (f_nt == 1.0 and f == 0.6)  # stage 1 only adds the 0.6 timestamp penalty
    for s, g, loc in zip(out["segment_matching"], out["global_matching"], out["local_matching"], strict=True):
        assert s == g + loc


@SETTINGS
@given(st.lists(st.tuples(completion_text, any_solution, duration), min_size=1, max_size=4))
def test_rewards_never_raise_on_any_ground_truth(batch):
    # overlapping / empty / zero-length ground truth (as in a few MUSEG rows): no exception, no NaN
    completions, solution, durations = (list(x) for x in zip(*batch, strict=True))
    out = _call_all(completions, solution, durations)
    for name in ("format", "format_no_timestamp", "local_matching", "iou", "cendist"):
        assert all(RANGES[name](v) for v in out[name]), name
    assert all(v >= 0.0 for v in out["global_matching"])


@SETTINGS
@given(disjoint_solution(), st.sampled_from(["", " ", "\n"]))
def test_ground_truth_as_answer_scores_high(solution, sep):
    # Predicting the ground truth itself (repr keeps the exact floats): local = 1, IoU = 1, CenDist = 1;
    # global = 1 up to its 1e-6 stabilisers; zero-length segments make the answer malformed (all 0).
    answer = " ".join(f"{s!r}-{e!r}" for s, e in solution)
    assume("e-" not in answer)  # repr(1e-05) contains "-", which the s-e syntax cannot express
    completion = f"<think>{answer}</think>{sep}<answer>{answer}</answer>"
    out = _call_all([completion], [solution], [None])
    if any(s >= e for s, e in solution):
        assert out["local_matching"] == [0.0] and out["iou"] == [0.0]
        return
    assert math.isclose(out["local_matching"][0], 1.0, abs_tol=1e-9)
    assert out["iou"] == [1.0] and out["cendist"] == [1.0]
    total = sum(e - s for s, e in solution)
    if total > 1e-3:
        assert math.isclose(out["global_matching"][0], 1.0, abs_tol=1e-2)
    assert out["format_no_timestamp"] == [1.0]
