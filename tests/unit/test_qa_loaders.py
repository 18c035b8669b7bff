"""Multiple-choice QA loaders: each public format from a tiny fixture written here (rows shaped as
the primary sources show them, see museg_lit.evaluation.qa.loaders), normalised to QAItem; bad
input names file, row and key."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from museg_lit.data.annotations import AnnotationError
from museg_lit.evaluation.qa.loaders import QAItem, load_qa

VIDEO_MME_ROWS = [
    {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
     "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-1",
     "task_type": "Counting Problem", "question": "When demonstrating the Germany modern Christmas tree is "
     "initially decorated with apples, candles and berries, which kind of the decoration has the largest number?",
     "options": ["A. Apples.", "B. Candles.", "C. Berries.", "D. The three kinds are of the same number."],
     "answer": "C"},
    {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
     "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-2",
     "task_type": "Information Synopsis", "question": "What is the genre of this video?",
     "options": ["A. It is a news report.", "B. It is a documentary.", "C. It is a travel vlog.",
                 "D. It is a science experiment."], "answer": "B"},
]


def test_video_mme_parquet(tmp_path):
    path = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(VIDEO_MME_ROWS), path)
    first, second = load_qa(path, "video_mme")
    assert first == QAItem(
        id="001-1", video="fFjv93ACGo8.mp4", question=VIDEO_MME_ROWS[0]["question"],
        options=["Apples.", "Candles.", "Berries.", "The three kinds are of the same number."], answer="C",
        duration=None, evidence=None, question_type="Counting Problem",
        extra={"duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History", "video_id": "001"})
    assert second.answer == "B" and second.options[1] == "It is a documentary."


def test_video_mme_json_rows_and_errors(tmp_path):
    path = tmp_path / "videomme.json"
    path.write_text(json.dumps(VIDEO_MME_ROWS))
    assert [it.id for it in load_qa(path, "video_mme")] == ["001-1", "001-2"]
    bad = [VIDEO_MME_ROWS[0], {**VIDEO_MME_ROWS[1], "answer": "E"}]
    path.write_text(json.dumps(bad))
    with pytest.raises(AnnotationError, match=r"videomme\.json\[1\]: key 'answer' must be one of A, B, C, D, got 'E'"):
        load_qa(path, "video_mme")
    unlettered = [{**VIDEO_MME_ROWS[0], "options": ["Apples.", "B. Candles."]}]
    path.write_text(json.dumps(unlettered))
    with pytest.raises(AnnotationError, match=r"\[0\]: key 'options' item 0 must start with 'A\.'"):
        load_qa(path, "video_mme")


def test_video_mme_unreadable_parquet_names_the_file(tmp_path):
    path = tmp_path / "test.parquet"
    path.write_text("version https://git-lfs.github.com/spec/v1\n")  # an LFS pointer instead of the file
    with pytest.raises(AnnotationError, match=r"test\.parquet: not a readable parquet file"):
        load_qa(path, "video_mme")


LVB_ROWS = [
    {"video_id": "86CxyhFV9MI", "question": "In the video, which subtitles appear at the same time as the man "
     "with black hair?", "question_wo_referring_query": "Which subtitles appear?", "candidates": [
        "promisc has come to an end", "run away", "protected by a police officer", "are you not",
        "the light is very bright"], "correct_choice": 1, "position": [3168, 3239], "topic_category": "NP-News-Programs",
     "question_category": "TOS", "level": "L2-Relation", "id": "86CxyhFV9MI_0", "video_path": "86CxyhFV9MI.mp4",
     "subtitle_path": "86CxyhFV9MI_en.json", "duration_group": 600, "starting_timestamp_for_subtitles": 0,
     "duration": 191.0, "view_count": 1000},
]


def test_longvideobench(tmp_path):
    path = tmp_path / "lvb_val.json"
    path.write_text(json.dumps(LVB_ROWS))
    (item,) = load_qa(path, "longvideobench")
    assert (item.id, item.video, item.answer, item.duration, item.question_type) == (
        "86CxyhFV9MI_0", "86CxyhFV9MI.mp4", "B", 191.0, "TOS")  # correct_choice 1 -> B
    assert len(item.options) == 5 and item.options[1] == "run away"
    assert item.extra == {"topic_category": "NP-News-Programs", "duration_group": 600, "video_id": "86CxyhFV9MI",
                          "level": "L2-Relation", "position": [3168, 3239]}


@pytest.mark.parametrize(("change", "message"), [
    ({"correct_choice": None}, r"lvb_val\.json\[0\]: missing key 'correct_choice' \(lvb_test_wo_gt\.json has no answers"),
    ({"correct_choice": 5}, r"\[0\]: key 'correct_choice' must be in \[0, 4\], got 5"),
    ({"correct_choice": True}, r"\[0\]: key 'correct_choice' must be int, got True"),
    ({"candidates": "run away"}, r"\[0\]: key 'candidates' must be list"),
    ({"duration": -1}, r"\[0\]: key 'duration' must be a positive number of seconds"),
])
def test_longvideobench_errors(tmp_path, change, message):
    path = tmp_path / "lvb_val.json"
    path.write_text(json.dumps([{**LVB_ROWS[0], **change}]))
    with pytest.raises(AnnotationError, match=message):
        load_qa(path, "longvideobench")


MLVU_ORDER = [
    {"video": "order_126.mp4", "duration": 665.34, "question": "Arrange the following events from the video in "
     "the correct chronological order: (1)Woman tapes her hands; (2)Woman starts boxing.",
     "candidates": ["2->1", "1->2"], "answer": "1->2", "question_type": "order"},
]
MLVU_NEEDLE = [
    {"video": "needle_32.mp4", "duration": 467.2, "question": "What does the hand coming out of the computer do?",
     "candidates": ["Delivers a product", "Shakes the woman's hand", "Takes the woman's credit card",
                    "Points at something on the table"], "answer": "Delivers a product", "question_type": "findNeedle"},
]


def test_mlvu_folder_of_task_files(tmp_path):
    (tmp_path / "5_order.json").write_text(json.dumps(MLVU_ORDER))
    (tmp_path / "2_needle.json").write_text(json.dumps(MLVU_NEEDLE))
    (tmp_path / "9_summary.json").write_text(json.dumps([{"video": "x.mp4", "question": "Summarise."}]))  # free-form
    needle, order = load_qa(tmp_path, "mlvu")  # files in name order; the summary task is skipped
    assert (needle.id, needle.video, needle.answer, needle.question_type) == (
        "2_needle/0", "2_needle/needle_32.mp4", "A", "findNeedle")
    assert (order.id, order.video, order.answer, order.duration, order.options) == (
        "5_order/0", "5_order/order_126.mp4", "B", 665.34, ["2->1", "1->2"])  # answer text -> its letter


def test_mlvu_errors(tmp_path):
    path = tmp_path / "5_order.json"
    path.write_text(json.dumps([{**MLVU_ORDER[0], "answer": "3->1"}]))
    with pytest.raises(AnnotationError, match=r"5_order\.json\[0\]: key 'answer' must be one of the candidates"):
        load_qa(path, "mlvu")
    summary = tmp_path / "9_summary.json"
    summary.write_text("[]")
    with pytest.raises(AnnotationError, match="free-form"):
        load_qa(summary, "mlvu")


def test_qa_jsonl_with_evidence_and_a_malformed_line(tmp_path):
    good = {"id": "q0", "video": "videos/a.mp4", "duration": 13.2, "question": "Which colour?",
            "options": ["red", "green", "blue", "white"], "answer": "C", "evidence": [[7.3, 12.3]],
            "question_type": "colour_after"}
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps(good) + "\n")
    (item,) = load_qa(path, "qa_jsonl")
    assert item.evidence == [[7.3, 12.3]] and item.answer == "C" and item.duration == 13.2
    path.write_text(json.dumps(good) + "\n" + '{"id": "q1", "video": "b.mp4", "question": "x"\n')
    with pytest.raises(AnnotationError, match=r"test\.jsonl:2: not valid JSON"):
        load_qa(path, "qa_jsonl")
    path.write_text(json.dumps({**good, "evidence": [[5, 2]]}) + "\n")
    with pytest.raises(AnnotationError, match=r"test\.jsonl:1: key 'evidence' must be a list of \[start, end\]"):
        load_qa(path, "qa_jsonl")
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(AnnotationError, match="question id 'q0' occurs twice"):
        load_qa(path, "qa_jsonl")
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "options"}) + "\n")
    with pytest.raises(AnnotationError, match=r"test\.jsonl:1: missing key 'options'"):
        load_qa(path, "qa_jsonl")


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(AnnotationError, match="annotation file not found"):
        load_qa(tmp_path / "nope.json", "mlvu")
    with pytest.raises(ValueError, match="unknown QA format 'mcq'"):
        load_qa(tmp_path, "mcq")
