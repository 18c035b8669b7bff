"""Annotation loaders on the real MUSEG files and on broken inputs (errors name file and line)."""

import json

import pytest

from museg_lit.data.annotations import (
    AnnotationError,
    LoadReport,
    load_museg_eval_json,
    load_museg_jsonl,
    task_counts,
)
from museg_lit.data.datamodule import resolve_video
from museg_lit.data.video import VideoDecodeError


def test_stage1_counts(museg_data_dir):
    samples = load_museg_jsonl(museg_data_dir / "stage_1.jsonl")
    assert len(samples) == 5600
    assert task_counts(samples) == {"tvg": 3030, "tal": 2570}
    first = samples[0]
    assert first.task == "tal" and first.duration == 80.0 and first.solution[0] == [0.03, 7.07]
    assert first.video == "videos/et_instruct_164k/hacs/F54PZypvzCc.mp4"


def test_stage2_and_eval_files(museg_data_dir):
    assert len(load_museg_jsonl(museg_data_dir / "stage_2.jsonl")) == 7000
    charades = load_museg_eval_json(museg_data_dir / "charades_sta.json")
    assert len(charades) == 3720 and {s.task for s in charades} == {"tvg"}
    thumos = load_museg_eval_json(museg_data_dir / "thumos14.json")
    assert {s.task for s in thumos} == {"tal"}


def _write(tmp_path, lines):
    p = tmp_path / "a.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


GOOD = {"idx": 0, "problem": "q", "solution": [[1.0, 2.0]], "video": "v.mp4", "duration": 10.0, "task": "tvg"}


def test_corrupt_line_is_named(tmp_path):
    p = _write(tmp_path, [json.dumps(GOOD), "{not json"])
    with pytest.raises(AnnotationError, match=r"a\.jsonl:2: not valid JSON"):
        load_museg_jsonl(p)


def test_missing_key_is_named(tmp_path):
    bad = dict(GOOD)
    del bad["video"]
    with pytest.raises(AnnotationError, match=r"a\.jsonl:1: missing key 'video'"):
        load_museg_jsonl(_write(tmp_path, [json.dumps(bad)]))


def test_bad_task(tmp_path):
    with pytest.raises(AnnotationError, match="'task'"):
        load_museg_jsonl(_write(tmp_path, [json.dumps({**GOOD, "task": "qa"})]))


def test_non_utf8(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"problem": "\xff\xfe"}\n')
    with pytest.raises(AnnotationError, match="not UTF-8"):
        load_museg_jsonl(p)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("clip", [[[2.0, 10.0]], [[0.0, 1.0]]]), ("drop", [[[0.0, 1.0]]])],
)
def test_segment_policies(tmp_path, policy, expected):
    lines = [
        json.dumps({**GOOD, "solution": [[2.0, 12.0]]}),  # beyond duration 10 -> clip to [2, 10]
        json.dumps({**GOOD, "solution": [[0.0, 1.0]]}),
    ]
    report = LoadReport()
    samples = load_museg_jsonl(_write(tmp_path, lines), segment_policy=policy, report=report)
    assert [s.solution for s in samples] == expected
    assert report.loaded + report.num_dropped == 2


def test_segment_policy_error(tmp_path):
    with pytest.raises(AnnotationError, match=r"a\.jsonl:1: segment \[5.0, 3.0\] is invalid"):
        load_museg_jsonl(_write(tmp_path, [json.dumps({**GOOD, "solution": [[5.0, 3.0]]})]), segment_policy="error")


def test_missing_file_named(tmp_path):
    with pytest.raises(AnnotationError, match="nope.jsonl: annotation file not found"):
        load_museg_jsonl(tmp_path / "nope.jsonl")


def test_video_path_cannot_escape_root(tmp_path):
    assert resolve_video(tmp_path, "videos/a.mp4") == (tmp_path / "videos/a.mp4").resolve()
    with pytest.raises(VideoDecodeError, match="escapes the video root"):
        resolve_video(tmp_path, "../../etc/passwd")
