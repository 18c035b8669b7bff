"""Ground-then-answer arithmetic by hand: the stage-2 window, the option-letter parsing, the
prompts and the accuracy maths."""

from __future__ import annotations

import pytest

from museg_lit.evaluation.qa.answers import grounding_question, mc_question, parse_option_letter, window_note
from museg_lit.evaluation.qa.metrics import hull, interval_iou, qa_metrics
from museg_lit.evaluation.qa.window import Window, answer_window

# ---------------------------------------------------------------------------- the window


@pytest.mark.parametrize(("prediction", "margin", "expected"), [
    ([[10.0, 14.0]], 2.0, Window(8.0, 16.0, False, None)),               # 10 - 2, 14 + 2
    ([[10.0, 12.0], [20.0, 21.0]], 2.0, Window(8.0, 23.0, False, None)),  # hull [10, 21], then the margin
    ([[0.5, 3.0]], 2.0, Window(0.0, 5.0, False, None)),                  # -1.5 clipped to 0
    ([[27.0, 40.0]], 2.0, Window(25.0, 30.0, False, None)),              # 42 clipped to the duration
    ([[10.0, 14.0]], 0.0, Window(10.0, 14.0, False, None)),              # no margin: the grounding itself
    ([[10.0, 10.2]], 0.0, Window(9.6, 10.6, False, None)),               # 0.2 s widened to 1 s around 10.1
    ([[0.0, 0.3]], 0.0, Window(0.0, 1.0, False, None)),                  # widened, kept inside the video
    ([[29.9, 30.0]], 0.0, Window(29.0, 30.0, False, None)),
    ([[40.0, 45.0]], 2.0, Window(0.0, 30.0, True, "outside_video")),     # starts after the end
    (None, 2.0, Window(0.0, 30.0, True, "unparsable")),                  # no parsable <answer>
    ([], 2.0, Window(0.0, 30.0, True, "unparsable")),
])
def test_answer_window(prediction, margin, expected):
    assert answer_window(prediction, 30.0, margin) == expected


def test_answer_window_short_video_and_bad_duration():
    assert answer_window([[0.2, 0.4]], 0.8, 0.0, min_window_s=1.0) == Window(0.0, 0.8, False, None)
    with pytest.raises(ValueError, match="duration must be > 0"):
        answer_window([[1, 2]], 0.0, 1.0)


# ---------------------------------------------------------------------------- the letter

OPTIONS = ["red", "green", "blue", "white"]


@pytest.mark.parametrize(("output", "expected"), [
    ("C", "C"),
    ("C.", "C"),
    ("(B) green", "B"),
    ("B. green", "B"),
    ("D: white", "D"),
    ("  A", "A"),
    ("The answer is (C).", "C"),
    ("The answer is D", "D"),
    ("Answer: B", "B"),
    ("Best option: (A", "A"),
    ("<think>the next shape is blue</think><answer>C</answer>", "C"),  # the answer tag decides
    ("blue", "C"),                     # an option's text, whole
    ("Blue.", "C"),
    ("I think it is C", "C"),          # one standalone valid capital
    ("E", None),                       # beyond the four options
    ("The answer is E", None),
    ("C or D", None),                  # two candidates: undecided
    ("red or blue", None),
    ("", None),
    ("\n\n\n", None),
    ("I don't know", None),            # "I" is not a valid letter for four options
    ("abc", None),                     # lower case letters never count
])
def test_parse_option_letter(output, expected):
    assert parse_option_letter(output, OPTIONS) == expected


def test_parse_option_letter_respects_the_number_of_options():
    assert parse_option_letter("E", ["a", "b", "c", "d", "e"]) == "E"
    assert parse_option_letter("C", ["yes", "no"]) is None


# ---------------------------------------------------------------------------- prompts


def test_prompts():
    assert mc_question("Which colour?", ["red", "blue"], window_note(8.0, 16.5)) == (
        "This clip shows seconds 8.00 to 16.50 of the video.\nWhich colour?\nA. red\nB. blue\n"
        "Answer with the option's letter from the given choices directly.")
    q = grounding_question("Which colour is next?")
    assert q.startswith("Find the video segment needed to answer the question: 'Which colour is next?' First, output")
    assert '"<answer>X.XX-X.XX</answer>"' in q  # MUSEG's template around it


# ---------------------------------------------------------------------------- accuracy maths


def row(answer, gta, base, **kw):
    return {"answer": answer, "gta_letter": gta, "baseline_letter": base, "options": ["a", "b", "c", "d"], **kw}


def test_qa_metrics_by_hand():
    records = [
        row("A", "A", "A", question_type="x", fallback=False),   # both right
        row("A", "B", "A", question_type="x", fallback=True),    # only the baseline
        row("B", "B", "C", question_type="y", fallback=False),   # only ground-then-answer
        row("C", None, "C", question_type="y", fallback=False),  # gta unanswered, baseline right
    ]
    m = qa_metrics(records)
    assert m["num"] == 4
    assert m["gta_accuracy"] == 0.5 and m["baseline_accuracy"] == 0.75 and m["delta"] == -0.25
    assert (m["both_correct"], m["only_gta"], m["only_baseline"]) == (0.25, 0.25, 0.5)
    assert (m["gta_unanswered"], m["baseline_unanswered"], m["fallback_rate"]) == (0.25, 0.0, 0.25)
    assert m["chance_accuracy"] == 0.25
    assert (m["gta_accuracy/x"], m["baseline_accuracy/x"]) == (0.5, 1.0)
    assert (m["gta_accuracy/y"], m["baseline_accuracy/y"]) == (0.5, 0.5)
    assert m["num_with_evidence"] == 0 and "evidence_iou" not in m


def test_qa_metrics_evidence():
    records = [
        # grounded hull [2, 6] vs evidence [0, 4]: 2 / 6; window [0, 8] holds the evidence
        row("A", "A", "B", evidence=[[0.0, 4.0]], grounded=[[2.0, 3.0], [5.0, 6.0]], window=[0.0, 8.0]),
        # no grounding: IoU 0; window [1, 5] misses the evidence start (0.5)
        row("A", "A", "B", evidence=[[0.5, 4.0]], grounded=None, window=[1.0, 5.0]),
        row("A", "A", "B"),  # no evidence: not in the evidence scores
    ]
    m = qa_metrics(records)
    assert m["num_with_evidence"] == 2
    assert m["evidence_iou"] == pytest.approx((2 / 6 + 0) / 2)
    assert m["evidence_in_window"] == 0.5
    assert "gta_accuracy/untyped" not in m  # one question type: no per-type keys


def test_hull_and_iou():
    assert hull([[3, 5], [8, 9]]) == (3, 9) and hull(None) is None and hull([]) is None
    assert interval_iou((0, 4), (2, 6)) == pytest.approx(1 / 3)
    assert interval_iou((0, 1), (2, 3)) == 0.0 and interval_iou(None, (0, 1)) == 0.0
    with pytest.raises(ValueError):
        qa_metrics([])
