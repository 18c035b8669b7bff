"""Evaluation runner without a model: grouping by video, one decode per video, batching, the
resumable JSONL, the missing-video message and broken videos. Generation is replaced by a stub
that answers from the ground truth, so the expected metrics can be worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from museg_lit.data.frames import FrameSpec
from museg_lit.data.video import VideoClip, VideoDecodeError
from museg_lit.evaluation import decode as decode_mod
from museg_lit.evaluation import runner as runner_mod
from museg_lit.evaluation.decode import group_by_video, iter_batches
from museg_lit.evaluation.runner import EvalRunner
from museg_lit.evaluation.sources import MissingVideosError
from museg_lit.evaluation.store import PredictionStore
from museg_lit.evaluation.types import EvalItem
from museg_lit.rewards.parsing import extract_answer

# 5 queries on 3 videos (a, b, c); a and b are shared, as in Charades-STA.
ANNOTATIONS = [
    {"video": "charades/a.mp4", "question": "q0: person opens a door.", "groundtruth": [[0.0, 10.0]]},
    {"video": "charades/b.mp4", "question": "q1: person sits.", "groundtruth": [[2.0, 4.0]]},
    {"video": "charades/a.mp4", "question": "q2: person closes the door.", "groundtruth": [[5.0, 10.0]]},
    {"video": "charades/c.mp4", "question": "q3: person eats.", "groundtruth": [[1.0, 3.0]]},
    {"video": "charades/b.mp4", "question": "q4: person stands up.", "groundtruth": [[6.0, 8.0]]},
]


def item(i: str, video: str) -> EvalItem:
    return EvalItem(i, video, "q", [[0.0, 1.0]], "tvg")


def test_group_by_video_keeps_first_appearance_order():
    items = [item("0", "a"), item("1", "b"), item("2", "a"), item("3", "c"), item("4", "b")]
    assert [(v, [it.id for it in g]) for v, g in group_by_video(items)] == [
        ("a", ["0", "2"]), ("b", ["1", "4"]), ("c", ["3"])]


def test_iter_batches_spans_videos_and_shares_payloads():
    groups = [([item("0", "a"), item("1", "a"), item("2", "a")], "clip-a"), ([item("3", "b"), item("4", "b")], "clip-b")]
    batches = list(iter_batches(groups, 2))
    assert [[(it.id, p) for it, p in b] for b in batches] == [
        [("0", "clip-a"), ("1", "clip-a")], [("2", "clip-a"), ("3", "clip-b")], [("4", "clip-b")]]


@pytest.mark.parametrize(("output", "expected"), [
    ("<think>x</think><answer> 1-2 </answer>", "1-2"),
    ("<answer>1-2</answer><answer>3-4</answer>", ""),  # two answer tags: MUSEG keeps nothing
    ("</answer>1-2<answer>", ""),
    ("no tags", ""),
])
def test_answer_text(output, expected):  # the evaluation's reading of MUSEG's extraction
    assert extract_answer(output, default="", strip=True) == expected


# ---------------------------------------------------------------------------- runner with stubs


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """Annotation file, empty video files, a counting fake decoder and a stub generator."""
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(ANNOTATIONS))
    for v in {a["video"] for a in ANNOTATIONS}:
        (tmp_path / "videos" / v).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "videos" / v).write_bytes(b"")
    state = {"decoded": [], "generated": [], "broken": set(), "fail_after": None}

    def fake_load_video(path, **kwargs):
        state["decoded"].append(Path(path).name)
        if Path(path).name in state["broken"]:
            raise VideoDecodeError(path, "moov atom not found")
        return VideoClip(torch.zeros(4, 3, 28, 28, dtype=torch.uint8), 2.0, [0, 0.5, 1, 1.5], 12.0, [0, 1, 2, 3],
                         2.0, 4, str(path))

    def fake_generate(model, processor, questions, clips, *, max_new_tokens):
        if state["fail_after"] is not None and len(state["generated"]) >= state["fail_after"]:
            raise KeyboardInterrupt  # the user stops the evaluation
        state["generated"].extend(questions)
        # q0 exact (IoU 1), q1 half (IoU 0.5), q2 no answer tag, q3/q4 exact
        answers = {"q0": "0-10", "q1": "2-3", "q3": "1-3", "q4": "6-8"}
        return [f"<think>t</think><answer>{answers[q[:2]]}</answer>" if q[:2] in answers else "I don't know"
                for q in questions]

    monkeypatch.setattr(decode_mod, "load_video", fake_load_video)
    monkeypatch.setattr(runner_mod, "generate_answers", fake_generate)
    return tmp_path, ann, state


def make_runner(tmp_path, ann, **kw) -> EvalRunner:
    kw.setdefault("batch_size", 2)
    return EvalRunner(str(ann), str(tmp_path / "videos"), str(tmp_path / "out"), dataset="charades_sta",
                      template="plain", frames=FrameSpec(), progress=False, **kw)


def test_each_video_decoded_once_and_metrics_by_hand(workspace):
    tmp_path, ann, state = workspace
    result = make_runner(tmp_path, ann).run(None, None, model_id="m")
    assert sorted(state["decoded"]) == ["a.mp4", "b.mp4", "c.mp4"]  # 3 decodes for 5 queries
    assert len(state["generated"]) == 5
    # IoUs 1, 0.5, 0 (no prediction), 1, 1 -> m_iou 3.5/5; >=0.5: 4 of 5, >=0.7: 3 of 5
    assert result.metrics["m_iou"] == pytest.approx(0.7)
    assert result.metrics["f1_single_0.5"] == pytest.approx(0.8)
    assert result.metrics["f1_single_0.7"] == pytest.approx(0.6)
    assert result.metrics["no_prediction"] == pytest.approx(0.2)
    assert result.headline == "m_iou"
    rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["0", "1", "2", "3", "4"]
    row = next(r for r in rows if r["id"] == "1")
    assert row["prediction"] == [[2.0, 3.0]] and row["iou"] == pytest.approx(0.5)
    assert row["groundtruth"] == [[2.0, 4.0]] and row["question"].startswith("q1") and row["error"] is None
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary["headline_metric"] == "m_iou" and summary["headline_percent"] == 70.0
    assert {"timeline", "iou_hist", "recall_curve"} <= set(result.files)
    assert all(p.stat().st_size > 0 for p in result.files.values())


def test_interrupted_run_resumes_with_the_missing_samples_only(workspace):
    tmp_path, ann, state = workspace
    state["fail_after"] = 2  # stop during the second batch
    with pytest.raises(KeyboardInterrupt):
        make_runner(tmp_path, ann).run(None, None, model_id="m")
    jsonl = tmp_path / "out" / "predictions.jsonl"
    assert len(jsonl.read_text().splitlines()) == 2  # the first batch was flushed
    with open(jsonl, "a") as f:
        f.write('{"id": "3", "vid')  # a write torn by the kill
    state["fail_after"], state["generated"] = None, []
    result = make_runner(tmp_path, ann).run(None, None, model_id="m")
    assert result.num_generated == 3 and len(state["generated"]) == 3  # only q2, q3, q4
    lines = jsonl.read_text().splitlines()
    assert len(lines) == 5 and all(json.loads(line) for line in lines)
    assert result.metrics["m_iou"] == pytest.approx(0.7)  # same as an uninterrupted run


def test_resume_refuses_other_settings(workspace):
    tmp_path, ann, _ = workspace
    make_runner(tmp_path, ann, max_samples=2).run(None, None, model_id="model-A")
    with pytest.raises(ValueError, match="differ: model"):
        make_runner(tmp_path, ann).prepare("model-B")
    # resume=false starts over
    assert make_runner(tmp_path, ann, resume=False).prepare("model-B") == set()


def test_missing_videos_fail_before_anything_with_counts_root_and_source(workspace):
    tmp_path, ann, state = workspace
    (tmp_path / "videos" / "charades" / "a.mp4").unlink()
    (tmp_path / "videos" / "charades" / "c.mp4").unlink()
    with pytest.raises(MissingVideosError) as exc:
        make_runner(tmp_path, ann).prepare("m")
    msg = str(exc.value)
    assert "2 of 3 videos are missing" in msg
    assert str((tmp_path / "videos").resolve()) in msg and "charades/a.mp4" in msg
    assert "Charades_v1_480.zip" in msg and "VIDEO_ROOT" in msg
    assert state["decoded"] == [] and not (tmp_path / "out" / "predictions.jsonl").exists()


def test_broken_video_counts_as_no_prediction_and_is_retried_later(workspace):
    tmp_path, ann, state = workspace
    state["broken"] = {"b.mp4"}
    result = make_runner(tmp_path, ann).run(None, None, model_id="m")
    errors = [r for r in result.records if r["error"]]
    assert sorted(r["id"] for r in errors) == ["1", "4"] and all(r["prediction"] is None for r in errors)
    assert result.metrics["video_errors"] == 2
    assert result.metrics["m_iou"] == pytest.approx(2 / 5)  # q0 and q3 exact, the rest 0
    state["broken"], state["generated"] = set(), []
    result = make_runner(tmp_path, ann).run(None, None, model_id="m")
    assert sorted(q[:2] for q in state["generated"]) == ["q1", "q4"]  # the fixed video is retried
    assert result.metrics["m_iou"] == pytest.approx(0.7)


def test_prediction_store_last_row_wins_and_torn_tail_is_cut(tmp_path):
    store = PredictionStore(tmp_path / "p.jsonl")
    store.append([{"id": "0", "error": "broken"}, {"id": "1", "error": None}])
    store.append([{"id": "0", "error": None}])
    with open(store.path, "a") as f:
        f.write('{"id": "2", "err')
    assert store.done_ids() == {"0", "1"}
    assert store.path.read_text().endswith("\n")  # the torn line is gone, appends stay aligned
    store.append([{"id": "2", "error": None}])
    assert store.done_ids() == {"0", "1", "2"}


def test_real_charades_file_groups_to_its_video_count(museg_data_dir, tmp_path):
    runner = EvalRunner(str(museg_data_dir / "charades_sta.json"), str(tmp_path), str(tmp_path / "o"), progress=False)
    items = runner.items()
    assert len(items) == 3720 and len(group_by_video(items)) == 1334 and items[0].task == "tvg"
    with pytest.raises(MissingVideosError, match="1334 of 1334 videos are missing"):
        runner.check_videos()


@pytest.mark.parametrize(("data", "template"), [
    ("charades_sta", "frame_selection_thinking"), ("thumos14", "frame_selection_thinking"),
    ("thumos15", "frame_selection_thinking"), ("perception_test", "frame_selection_thinking"),
    ("et_bench", "etbench"), ("et_bench_subset", "etbench"),
])
def test_eval_config_composes_with_the_published_protocol(data, template, tmp_path):
    from hydra.utils import instantiate

    from museg_lit.config import compose
    from museg_lit.evaluation.etbench import ETBenchBenchmark

    cfg = compose([f"data={data}", f"paths.root_dir={tmp_path}"], config_name="eval")
    runner = instantiate(cfg.runner)
    f = runner.frames
    assert (f.fps, f.min_pixels, f.total_pixels, f.max_frames) == (2.0, 16 * 28 * 28, 3584 * 28 * 28, 768)
    assert runner.max_new_tokens == 512 and runner.template == template
    assert runner.output_dir == tmp_path / "logs" / "eval" / data / "tiny-qwen2.5-vl"
    assert isinstance(runner.benchmark, ETBenchBenchmark) == data.startswith("et_bench")
    assert cfg.model.gradient_checkpointing is False
    with pytest.raises(runner_mod.AnnotationError, match="not found"):  # `make data` not run in tmp_path
        runner.prepare("m")


# ---------------------------------------------------------------------------- content-keyed resume


def edit_annotations(ann: Path, **changes: dict) -> None:
    """Change annotation entries in place: ``edit_annotations(ann, e1={"groundtruth": ...})``."""
    entries = json.loads(ann.read_text())
    for name, fields in changes.items():
        entries[int(name[1:])].update(fields)
    ann.write_text(json.dumps(entries))


def test_item_changed_in_place_is_redone_and_scored_with_its_new_prediction(workspace, caplog):
    tmp_path, ann, state = workspace
    make_runner(tmp_path, ann).run(None, None, model_id="m")  # m_iou 0.7 (q1: IoU 0.5)
    # same ids, new content: q1's ground truth becomes its prediction (IoU 1), q3's question is reworded
    edit_annotations(ann, e1={"groundtruth": [[2.0, 3.0]]}, e3={"question": "q3: person eats a sandwich."})
    state["generated"] = []
    result = make_runner(tmp_path, ann).run(None, None, model_id="m")
    assert sorted(state["generated"]) == ["q1: person sits.", "q3: person eats a sandwich."]
    assert "2 stored predictions no longer match their annotation and are redone" in caplog.text
    assert result.num_generated == 2 and result.metrics["tot"] == 5  # superseded rows do not count twice
    assert result.metrics["m_iou"] == pytest.approx(0.8)  # (1 + 1 + 0 + 1 + 1) / 5
    by_id = {r["id"]: r for r in result.records}
    assert by_id["1"]["groundtruth"] == [[2.0, 3.0]] and by_id["1"]["iou"] == pytest.approx(1.0)
    assert by_id["3"]["question"] == "q3: person eats a sandwich."
    assert len((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()) == 7  # appended, not rewritten


def test_unchanged_items_are_reused_without_calling_the_model(workspace):
    tmp_path, ann, state = workspace
    first = make_runner(tmp_path, ann).run(None, None, model_id="m")
    edit_annotations(ann, e1={"groundtruth": [[2.0, 3.0]]})
    make_runner(tmp_path, ann).run(None, None, model_id="m")
    state["fail_after"] = 0  # any call to the model from here on stops the test
    result = make_runner(tmp_path, ann).run(None, None, model_id="m")
    assert result.num_generated == 0 and result.metrics["m_iou"] == pytest.approx(0.8)
    # back to the original annotation: the first run's row (its key matches again) is the one scored
    edit_annotations(ann, e1={"groundtruth": [[2.0, 4.0]]})
    result = make_runner(tmp_path, ann).run(None, None, model_id="m")
    assert result.num_generated == 0 and result.metrics == first.metrics


def test_rows_without_an_item_key_are_redone(workspace, caplog):
    tmp_path, ann, state = workspace
    make_runner(tmp_path, ann).run(None, None, model_id="m")
    jsonl = tmp_path / "out" / "predictions.jsonl"
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    jsonl.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "item_key"}) + "\n" for r in rows))
    state["generated"] = []
    result = make_runner(tmp_path, ann).run(None, None, model_id="m")
    assert len(state["generated"]) == 5 and result.metrics["m_iou"] == pytest.approx(0.7)
    assert "5 stored predictions no longer match their annotation and are redone (5 written without an item_key" in caplog.text


def test_item_key_covers_what_is_asked_and_how_it_is_scored():
    base = EvalItem("0", "a.mp4", "q", [[0.0, 1.0]], "tvg", {"source": "x"})
    frames = {"fps": 2.0}
    key = runner_mod.item_key(base, "prompt q", frames)
    assert len(key) == 16 and key == runner_mod.item_key(base, "prompt q", dict(frames))
    variants = [
        (EvalItem("0", "b.mp4", "q", [[0.0, 1.0]], "tvg", {"source": "x"}), "prompt q", frames),
        (EvalItem("0", "a.mp4", "q2", [[0.0, 1.0]], "tvg", {"source": "x"}), "prompt q", frames),
        (EvalItem("0", "a.mp4", "q", [[0.0, 2.0]], "tvg", {"source": "x"}), "prompt q", frames),
        (EvalItem("0", "a.mp4", "q", [[0.0, 1.0]], "tal", {"source": "x"}), "prompt q", frames),
        (EvalItem("0", "a.mp4", "q", [[0.0, 1.0]], "tvg", {"source": "y"}), "prompt q", frames),
        (base, "other template q", frames),
        (base, "prompt q", {"fps": 1.0}),
    ]
    assert len({key} | {runner_mod.item_key(*v) for v in variants}) == 1 + len(variants)


# ---------------------------------------------------------------------------- damaged files


def test_torn_last_line_inside_a_utf8_character_is_dropped_with_a_warning(tmp_path, caplog):
    store = PredictionStore(tmp_path / "p.jsonl")
    store.append([{"id": "0", "question": "café"}, {"id": "1", "question": "thé"}])
    intact = store.path.read_bytes()
    with open(store.path, "ab") as f:
        f.write(b'{"id": "2", "question": "caf' + "é".encode()[:1])  # killed inside the 2-byte é
    assert [r["question"] for r in store.rows()] == ["café", "thé"]
    assert f"{store.path}:3: dropping a torn last line" in caplog.text
    assert store.path.read_bytes() == intact  # cut, so the next append starts on a fresh line
    store.append([{"id": "2", "question": "café"}])
    assert [r["id"] for r in store.rows()] == ["0", "1", "2"]


@pytest.mark.parametrize(("line", "message"), [
    (b'{"id": "1", "question": "caf\xe2\x82"}', r"not UTF-8 \(byte 0xe2 at column 29\)"),
    (b'{"id": "1", "question": "caf', r"not valid JSON \(Unterminated string starting at: column 25\)"),
    (b'["1"]', r'not a prediction row \(a JSON object with an "id"\)'),
])
@pytest.mark.parametrize("position", ["middle", "last with its newline"])
def test_bad_line_elsewhere_is_an_error_naming_file_and_line(tmp_path, line, message, position):
    path = tmp_path / "p.jsonl"
    good = [b'{"id": "0"}', b'{"id": "2"}']
    lines = [good[0], line, good[1]] if position == "middle" else [*good, line]
    path.write_bytes(b"\n".join(lines) + b"\n")
    number = lines.index(line) + 1
    with pytest.raises(runner_mod.AnnotationError, match=rf"^{path}:{number}: {message}; remove the line or pass resume=false"):
        PredictionStore(path).rows()
    assert path.read_bytes() == b"\n".join(lines) + b"\n"  # left as it was


@pytest.mark.parametrize(("content", "message"), [
    (b"{not json", r"not valid JSON \(Expecting property name"),
    (b"\x89PNG\r\n\x1a\n\xff", r"not valid JSON \('utf-8' codec can't decode byte 0x89"),
    (b"[1]", r"not a JSON object"),
])
def test_garbage_run_meta_is_an_error_naming_the_file(workspace, content, message):
    tmp_path, ann, state = workspace
    make_runner(tmp_path, ann).run(None, None, model_id="m")
    meta = tmp_path / "out" / "run_meta.json"
    meta.write_bytes(content)
    with pytest.raises(runner_mod.AnnotationError, match=rf"^{meta}: {message}.*; delete it or pass resume=false"):
        make_runner(tmp_path, ann).prepare("m")
    assert make_runner(tmp_path, ann, resume=False).prepare("m") == set()  # the way out it names


@pytest.mark.parametrize(("content", "message"), [
    (b"{not json", r"not valid JSON \(Expecting property name"),
    (b"\x89PNG\r\n\x1a\n\xff", r"not valid JSON \('utf-8' codec"),
    (b"[1]", r"not a JSON object"),
])
def test_garbage_model_config_is_an_error_naming_the_file(tmp_path, content, message):
    from museg_lit.errors import ConfigError
    from museg_lit.models.factory import ModelSpec

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_bytes(content)
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'ckpt' / 'config.json'}: {message}"):
        runner_mod.load_eval_model(ModelSpec(name="Qwen/Qwen2.5-VL-7B-Instruct", path=str(tmp_path / "ckpt")), "cpu")
