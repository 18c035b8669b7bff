"""Annotation loaders on the real MUSEG files, on small inline E.T. Bench / Perception Test fixtures,
and on broken inputs (errors name file, line or index, and key)."""

import json

import pytest

from museg_lit.data.annotations import (
    AnnotationError,
    LoadReport,
    detect_format,
    load_annotations,
    load_et_bench_json,
    load_museg_eval_json,
    load_museg_jsonl,
    load_perception_test_json,
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
    [("clip", [[[2.0, 10.0]], [[0.0, 1.0]]]), ("drop", [[[0.0, 1.0]]]), ("keep", [[[2.0, 12.0]], [[0.0, 1.0]]])],
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


def test_keep_passes_museg_solutions_unmodified(museg_data_dir):
    # MUSEG handed the raw `solution` to its rewards: 194 stage-1 and 218 stage-2 samples have a
    # segment beyond the duration (or reversed); `keep` (conf/data/museg_stage*.yaml) leaves them all
    # as the file has them, `clip` would change them
    for name, unusual in (("stage_1.jsonl", 194), ("stage_2.jsonl", 218)):
        raw = [json.loads(line) for line in (museg_data_dir / name).read_text().splitlines() if line.strip()]
        kept, clipped = LoadReport(), LoadReport()
        samples = load_museg_jsonl(museg_data_dir / name, segment_policy="keep", report=kept)
        load_museg_jsonl(museg_data_dir / name, segment_policy="clip", report=clipped)
        assert [s.solution for s in samples] == [r["solution"] for r in raw]
        assert (kept.loaded, kept.kept_invalid, kept.clipped) == (len(raw), unusual, 0)
        assert clipped.clipped == unusual


def test_keep_still_refuses_malformed_segments(tmp_path):
    with pytest.raises(AnnotationError, match="must be a number, got 'a'"):
        load_museg_jsonl(_write(tmp_path, [json.dumps({**GOOD, "solution": [["a", 2]]})]), segment_policy="keep")


@pytest.mark.parametrize(("line", "message"), [
    ('"solution": [[NaN, 3]]', r"a\.jsonl:2: the start of segment \[nan, 3\] of key 'solution' must be a finite number"),
    ('"solution": [[1, Infinity]]', r"a\.jsonl:2: the end of segment \[1, inf\] .* must be a finite number"),
    ('"solution": [["1", 3]]', r"a\.jsonl:2: the start of segment \['1', 3\] .* must be a number, got '1'"),
    ('"solution": [[1, true]]', r"a\.jsonl:2: the end of segment \[1, True\] .* must be a number, got True"),
    ('"solution": [[1, 3]], "duration": "NaN"', r"a\.jsonl:2: key 'duration' must be a number, got 'NaN'"),
    ('"solution": [[1, 3]], "duration": NaN', r"a\.jsonl:2: key 'duration' must be a finite number"),
    ('"solution": [[1, 3]], "duration": 0', r"a\.jsonl:2: key 'duration' must be > 0 seconds"),
])
@pytest.mark.parametrize("policy", ["keep", "clip"])
def test_numbers_are_exact_and_finite_under_every_policy(line, message, policy, tmp_path):
    """NaN / Infinity (which Python's json accepts), numeric strings and booleans are refused at
    load with file:line and key: a NaN segment would otherwise turn rewards into NaN mid-run."""
    record = json.dumps({k: v for k, v in GOOD.items() if k not in ("solution", "duration")})[:-1] + ", " + line + "}"
    with pytest.raises(AnnotationError, match=message):
        load_museg_jsonl(_write(tmp_path, [json.dumps(GOOD), record]), segment_policy=policy)


def test_segment_policy_error(tmp_path):
    with pytest.raises(AnnotationError, match=r"a\.jsonl:1: segment \[5.0, 3.0\] is invalid"):
        load_museg_jsonl(
            _write(tmp_path, [json.dumps({**GOOD, "solution": [[5.0, 3.0]]})]), segment_policy="error"
        )


def test_missing_file_named(tmp_path):
    with pytest.raises(AnnotationError, match="nope.jsonl: annotation file not found"):
        load_museg_jsonl(tmp_path / "nope.jsonl")


def test_video_path_cannot_escape_root(tmp_path):
    assert resolve_video(tmp_path, "videos/a.mp4") == (tmp_path / "videos/a.mp4").resolve()
    with pytest.raises(VideoDecodeError, match="escapes the video root"):
        resolve_video(tmp_path, "../../etc/passwd")


# ---- LoadReport ----------------------------------------------------------------------------------


def test_report_counts_add_up_and_flatten_to_metrics(tmp_path):
    lines = [
        json.dumps({**GOOD, "solution": [[2.0, 12.0]]}),  # clipped to [2, 10]
        json.dumps({**GOOD, "solution": [[11.0, 12.0]]}),  # entirely beyond 10: nothing left -> dropped
        json.dumps(GOOD),
    ]
    report = LoadReport()
    samples = load_museg_jsonl(_write(tmp_path, lines), report=report)
    assert [s.solution for s in samples] == [[[2.0, 10.0]], [[1.0, 2.0]]]
    assert (report.loaded, report.clipped, dict(report.dropped)) == (2, 1, {"empty_after_clip": 1})
    assert report.total == 3
    assert report.as_metrics() == {
        "data/loaded": 2.0,
        "data/clipped": 1.0,
        "data/kept_invalid": 0.0,
        "data/dropped": 1.0,
        "data/filtered": 0.0,
        "data/dropped/empty_after_clip": 1.0,
    }
    assert report.summary() == "loaded 2 (clipped 1, kept invalid 0), dropped 1 (empty_after_clip 1), filtered 0"


def test_unknown_segment_policy(tmp_path):
    with pytest.raises(ValueError, match="segment_policy"):
        load_museg_eval_json(tmp_path / "x.json", segment_policy="fix")


# ---- Perception Test (MUSEG evaluation schema, always tal) ------------------------------------------


def test_perception_test_is_tal_even_with_single_segments(tmp_path):
    p = tmp_path / "perception_test.json"
    p.write_text(
        json.dumps(
            [
                {
                    "video": "perception_test/video_1.mp4",
                    "question": "Find all 'putting something'.",
                    "groundtruth": [[1.0, 2.5]],
                },
                {"video": "perception_test/video_2.mp4", "question": "q", "groundtruth": [[0.5, 1.0]]},
            ]
        )
    )
    report = LoadReport()
    samples = load_perception_test_json(p, report=report)
    assert [s.task for s in samples] == ["tal", "tal"]
    assert samples[0].solution == [[1.0, 2.5]] and samples[0].source.endswith("perception_test.json[0]")
    # the generic evaluation loader would call the same file tvg (no sample has two segments)
    assert {s.task for s in load_museg_eval_json(p)} == {"tvg"}
    assert load_annotations(p, annotation_format="perception_test")[1].task == "tal"
    assert report.loaded == 2


def test_eval_json_errors_name_index_and_key(tmp_path):
    p = tmp_path / "e.json"
    p.write_text(
        json.dumps(
            [
                {"video": "a.mp4", "question": "q", "groundtruth": [[1, 2]]},
                {"video": "b.mp4", "question": "q"},
            ]
        )
    )
    with pytest.raises(AnnotationError, match=r"e\.json\[1\]: missing key 'groundtruth'"):
        load_museg_eval_json(p)
    p.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(AnnotationError, match=r"e\.json: expected a JSON list"):
        load_museg_eval_json(p)


# ---- E.T. Bench (etbench_txt_v1.0.json schema) -----------------------------------------------------

# One record per task shape, as in E.T. Bench's docs/BENCHMARK.md and compute_metrics.py:
# tvg/epm/gvq: tgt = [s, e]; tal/evs/tem/dvc/slc: [[s, e], ...]; vhd: [[s, e], ...] or per annotator.
ET_RECORDS = [
    {
        "version": 1.0,
        "idx": 0,
        "task": "tvg",
        "source": "qvhighlights",
        "video": "qvhighlights/a.mp4",
        "duration": 35.0,
        "tgt": [15.0, 31.0],
        "q": "When does the cat jump?",
    },
    {
        "version": 1.0,
        "idx": 7,
        "task": "epm",
        "source": "ego4d_nlq",
        "video": "ego4d_nlq/b.mp4",
        "duration": 480.0,
        "tgt": [100.0, 104.5],
        "q": "Where did I put the keys?",
    },
    {
        "version": 1.0,
        "idx": 3,
        "task": "tal",
        "source": "thumos14",
        "video": "thumos14/c.mp4",
        "duration": 60.0,
        "tgt": [[1.0, 5.0], [20.0, 25.5]],
        "q": "Find every 'billiards' action.",
    },
    {
        "version": 1.0,
        "idx": 4,
        "task": "vhd",
        "source": "youtube_highlights",
        "video": "youtube_highlights/d.mp4",
        "duration": 30.0,
        "tgt": [[[1.0, 3.0]], [[2.0, 4.0], [10.0, 12.0]]],
        "q": "Highlight?",
    },
    {
        "version": 1.0,
        "idx": 5,
        "task": "tem",
        "source": "perception_test",
        "video": "perception_test/e.mp4",
        "duration": 20.0,
        "src": [1.2, 3.0],
        "tgt": [[4.0, 6.0], [8.0, 9.0]],
        "q": "The event at 1.2 - 3.0 seconds ...",
    },
    {
        "version": 1.0,
        "idx": 6,
        "task": "rar",
        "source": "perception_test",
        "video": "perception_test/f.mp4",
        "duration": 20.0,
        "p": 1,
        "o": ["a", "b", "c", "d"],
        "q": "Which option ...?",
    },
    {
        "version": 1.0,
        "idx": 9,
        "task": "dvc",
        "source": "youcook2",
        "video": "youcook2/g.mp4",
        "duration": 100.0,
        "tgt": [[0.0, 10.0], [12.0, 20.0]],
        "g": ["cut", "fry"],
        "q": "Describe ...",
    },
]


def _et_file(tmp_path, records=ET_RECORDS, name="et_bench.json"):
    p = tmp_path / name
    p.write_text(json.dumps(records))
    return p


def test_et_bench_default_tasks_normalised(tmp_path):
    report = LoadReport()
    samples = load_et_bench_json(_et_file(tmp_path), report=report)
    by_sub = {s.subtask: s for s in samples}
    assert sorted(by_sub) == ["epm", "tal", "tem", "tvg", "vhd"]  # rar (option) and dvc (captions) filtered
    tvg = by_sub["tvg"]
    assert (tvg.idx, tvg.task, tvg.solution, tvg.duration) == (
        "tvg/qvhighlights/0",
        "tvg",
        [[15.0, 31.0]],
        35.0,
    )
    assert (tvg.problem, tvg.video, tvg.dataset) == (
        "When does the cat jump?",
        "qvhighlights/a.mp4",
        "qvhighlights",
    )
    assert by_sub["epm"].task == "tvg" and by_sub["tal"].task == "tal"
    assert by_sub["tal"].solution == [[1.0, 5.0], [20.0, 25.5]]
    assert by_sub["vhd"].solution == [[1.0, 3.0], [2.0, 4.0], [10.0, 12.0]]  # annotators' segments, in order
    assert by_sub["tem"].task == "tal"
    assert (report.loaded, dict(report.filtered)) == (5, {"task_not_selected": 2})
    assert report.total == len(ET_RECORDS)


def test_et_bench_all_segment_tasks_and_option_tasks_refused(tmp_path):
    samples = load_et_bench_json(_et_file(tmp_path), tasks=None)
    assert sorted(s.subtask for s in samples) == ["dvc", "epm", "tal", "tem", "tvg", "vhd"]
    with pytest.raises(ValueError, match="rar: option tasks"):
        load_et_bench_json(_et_file(tmp_path), tasks=["tvg", "rar"])


def test_et_bench_subset(tmp_path):
    subset = tmp_path / "subset.json"
    subset.write_text(json.dumps({"tvg": {"qvhighlights": [0, 1]}, "tal": {"thumos14": [99]}}))
    report = LoadReport()
    samples = load_annotations(
        _et_file(tmp_path), subset_file=subset, tasks=["tvg", "tal", "epm"], report=report
    )
    assert [s.idx for s in samples] == ["tvg/qvhighlights/0"]
    assert dict(report.filtered) == {"not_in_subset": 2, "task_not_selected": 4}
    assert report.total == len(ET_RECORDS)


def test_et_bench_auto_detected(tmp_path):
    p = _et_file(tmp_path, name="anything.json")
    assert detect_format(p) == "et_bench"
    assert len(load_annotations(p)) == 5
    assert detect_format(tmp_path / "stage_1.jsonl") == "museg_train"


def test_et_bench_errors_name_index_and_key(tmp_path):
    no_tgt = {k: v for k, v in ET_RECORDS[0].items() if k != "tgt"}
    with pytest.raises(AnnotationError, match=r"et_bench\.json\[1\]: missing key 'tgt'"):
        load_et_bench_json(_et_file(tmp_path, [ET_RECORDS[1], no_tgt]))
    vid_style = {**ET_RECORDS[4], "q": "The event at <vid> - <vid> seconds ..."}
    with pytest.raises(AnnotationError, match=r"\[0\]: key 'q' holds <vid> tokens"):
        load_et_bench_json(_et_file(tmp_path, [vid_style]))
    bad_seg = {**ET_RECORDS[2], "tgt": [[1.0, "x"]]}
    with pytest.raises(AnnotationError, match=r"\[0\]: the end of segment \[1.0, 'x'\] of key 'tgt' must be a number, got 'x'"):
        load_et_bench_json(_et_file(tmp_path, [bad_seg]))
    with pytest.raises(AnnotationError, match=r"\[0\]: missing key 'source'"):
        load_et_bench_json(_et_file(tmp_path, [{"idx": 0, "task": "tvg"}]))


@pytest.mark.parametrize(("policy", "loaded", "dropped"), [("clip", 1, {}), ("drop", 0, {"bad_segment": 1})])
def test_et_bench_segment_policy(tmp_path, policy, loaded, dropped):
    beyond = {**ET_RECORDS[0], "tgt": [30.0, 40.0]}  # duration 35
    report = LoadReport()
    samples = load_et_bench_json(_et_file(tmp_path, [beyond]), segment_policy=policy, report=report)
    assert (report.loaded, dict(report.dropped)) == (loaded, dropped)
    if samples:
        assert samples[0].solution == [[30.0, 35.0]] and report.clipped == 1
    with pytest.raises(AnnotationError, match=r"\[0\]: segment \[30.0, 40.0\] is invalid \(key 'tgt'"):
        load_et_bench_json(_et_file(tmp_path, [beyond]), segment_policy="error")


def test_real_files_through_the_dispatcher(museg_data_dir):
    report = LoadReport()
    samples = load_annotations(museg_data_dir / "stage_1.jsonl", report=report)
    assert task_counts(samples) == {"tvg": 3030, "tal": 2570}
    assert (report.loaded, report.total, report.num_dropped) == (5600, 5600, 0)
    thumos = load_annotations(museg_data_dir / "thumos15.json")
    assert {s.task for s in thumos} == {"tal"} and all(s.subtask is None for s in thumos)
    with pytest.raises(ValueError, match="E.T. Bench files only"):
        load_annotations(museg_data_dir / "charades_sta.json", tasks=["tvg"])


def test_duplicate_ids_are_named_with_both_lines(tmp_path):
    rec = {"idx": 7, "problem": "q", "solution": [[0, 1]], "video": "v.mp4", "task": "tvg"}
    path = _write(tmp_path, [json.dumps(rec), json.dumps({**rec, "video": "w.mp4"})])
    with pytest.raises(AnnotationError, match=rf"^{path}:2: id '7' repeats \(first at {path}:1\)$"):
        load_annotations(path)


@pytest.mark.parametrize(("policy", "expected"), [
    ("keep", [[2.0, 12.0]]), ("clip", [[2.0, 8.0]]), ("drop", None), ("error", AnnotationError),
])
def test_segments_without_a_file_duration_meet_the_decoded_one(policy, expected):
    """No 'duration' in the file: the segment is checked against the decoded video's 8 s at decode."""
    from museg_lit.data.annotations import GroundingSample, fit_to_duration

    sample = GroundingSample(idx="1", problem="q", solution=[[2.0, 12.0]], video="v.mp4", task="tvg", source="a:3")
    if expected is AnnotationError:
        with pytest.raises(AnnotationError, match=r"a:3 \(decoded duration 8.000s of v.mp4\): segment \[2.0, 12.0\]"):
            fit_to_duration(sample, 8.0, policy)
        return
    out = fit_to_duration(sample, 8.0, policy)
    assert (out.solution if out is not None else None) == expected
    with_duration = GroundingSample(**{**sample.__dict__, "duration": 20.0})
    assert fit_to_duration(with_duration, 8.0, policy) is with_duration  # checked at load against its own
