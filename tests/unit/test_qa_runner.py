"""The ground-then-answer runner on real generated videos with a stub in place of the model:
stage 1 answers with a fixed segment (or garbage), the answers depend on whether the prompt
names a window, so the expected rows, windows, accuracies and the picture are known by hand.
Also: resume after a kill, a changed margin redoes the items, and the config checks."""

from __future__ import annotations

import json

import pytest

from museg_lit.data.frames import FrameSpec
from museg_lit.data.synthetic_qa import SyntheticQASpec, generate_synthetic_qa
from museg_lit.errors import ConfigError
from museg_lit.evaluation.qa import runner as runner_mod
from museg_lit.evaluation.qa.loaders import load_qa
from museg_lit.evaluation.qa.plots import draw_gta_timeline
from museg_lit.evaluation.qa.runner import GroundThenAnswerRunner
from museg_lit.schema import check_eval_config

FRAMES = FrameSpec(fps=2.0, min_frames=4, max_frames=32, min_pixels=3136, max_pixels=3136, total_pixels=None,
                   timeout_s=60.0)


@pytest.fixture(scope="module")
def qa_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic_qa")
    path = generate_synthetic_qa(SyntheticQASpec(out_dir=str(out), num_samples=2, seed=0))
    return out, path


def test_generated_questions_need_their_segment(qa_set):
    out, path = qa_set
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    first, second = load_qa(path, "qa_jsonl")
    # item 0 asks for the colour right after a named shape: the evidence runs from that shape's start
    # to the next one's end, and the correct option is the next shape's colour
    r0 = rows[0]
    k = next(i for i, kind in enumerate(r0["events"]) if f"after the {kind}?" in r0["question"])
    assert first.question_type == "colour_after" and first.evidence == [[r0["segments"][k][0], r0["segments"][k + 1][1]]]
    assert first.options[ord(first.answer) - 65] == r0["events"][k + 1].split()[0]
    assert len(first.options) == 4 and len(set(first.options)) == 4
    r1 = rows[1]
    k = next(i for i, kind in enumerate(r1["events"]) if f"before the {kind}?" in r1["question"])
    assert second.question_type == "shape_before" and second.options[ord(second.answer) - 65] == r1["events"][k - 1]
    assert (out / first.video).stat().st_size > 1000
    assert generate_synthetic_qa(SyntheticQASpec(out_dir=str(out), num_samples=2, seed=0)) == path  # reused


class StubModel:
    """Stage 1: item 0 grounds [7, 9] s, item 1 answers garbage (fallback). Answers: the correct
    letter when the prompt names a window, a wrong one otherwise."""

    def __init__(self, items):
        self.items = {it.question.strip(): it for it in items}
        self.calls: list[tuple[str, list]] = []

    def __call__(self, model, processor, questions, clips, *, max_new_tokens):
        outputs = []
        for q in questions:
            item = next(it for text, it in self.items.items() if text in q)
            if q.startswith("Find the video segment"):
                outputs.append("<think>at 7.0</think><answer>7.00-9.00</answer>" if item.id.endswith("0") else "??")
            else:
                wrong = next(letter for letter in "ABCD" if letter != item.answer)
                outputs.append(item.answer if q.startswith("This clip shows") else f"The answer is {wrong}.")
        self.calls.append(("ground" if questions[0].startswith("Find") else "answer", clips))
        return outputs


def make_runner(qa_set, out, **kw):
    root, path = qa_set
    return GroundThenAnswerRunner(str(path), str(root), str(out), "qa_jsonl", dataset="synthetic_qa", frames=FRAMES,
                                  margin_s=kw.pop("margin_s", 2.0), batch_size=2, progress=False, **kw)


def test_two_stages_windows_rows_metrics_and_picture(qa_set, tmp_path, monkeypatch):
    _, path = qa_set
    stub = StubModel(load_qa(path, "qa_jsonl"))
    monkeypatch.setattr(runner_mod, "generate_answers", stub)
    result = make_runner(qa_set, tmp_path).run(None, None, model_id="stub")
    first, second = result.records
    # item 0: grounded [7, 9] + 2 s margin -> window [5, 11], decoded on its own at video times
    assert first["grounded"] == [[7.0, 9.0]] and first["window"] == [5.0, 11.0]
    assert (first["fallback"], first["fallback_reason"]) == (False, None)
    assert first["window_timestamps"][0] >= 5.0 and first["window_timestamps"][1] <= 11.0
    assert first["window_frames"] == 12  # frames 20..44 of a 4-fps video (25 frames) at 2 fps -> 12
    assert (first["gta_letter"], first["gta_correct"], first["baseline_correct"]) == (first["answer"], True, False)
    # item 1: unparsable grounding -> the whole video, flagged; no window note -> the baseline's answer
    assert second["grounded"] is None and second["window"] == [0.0, second["duration"]]
    assert (second["fallback"], second["fallback_reason"]) == (True, "unparsable")
    assert second["gta_output"] == second["baseline_output"] and second["gta_correct"] is False
    # stage 2 got a window clip for item 0 (starting at 5 s) and the whole clip for item 1
    (_, clips) = stub.calls[-1]
    assert clips[0].timestamps[0] == pytest.approx(5.0) and clips[1].timestamps[0] == 0.0
    m = result.metrics
    assert (m["gta_accuracy"], m["baseline_accuracy"], m["fallback_rate"], m["only_gta"]) == (0.5, 0.0, 0.5, 0.5)
    assert result.headline == "gta_accuracy" and m["num_with_evidence"] == 2
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["task"] == "ground_then_answer" and summary["settings"]["gta"]["margin_s"] == 2.0
    assert (tmp_path / "gta_timeline.png").stat().st_size > 5000
    # the picture: per row the grounded segment, the window and the evidence at their coordinates
    fig = draw_gta_timeline(result.records)
    boxes = {p.get_gid(): (p.get_x(), p.get_x() + p.get_width(), p.get_y()) for p in fig.axes[0].patches}
    assert boxes[f"grounded:{first['id']}"][:2] == (7.0, 9.0)
    assert boxes[f"window:{first['id']}"][:2] == (5.0, 11.0)
    assert boxes[f"evidence:{first['id']}"][:2] == tuple(first["evidence"][0])
    assert boxes[f"window:{second['id']}"][:2] == (0.0, second["duration"])  # the fallback: whole video
    assert f"grounded:{second['id']}" not in boxes
    assert boxes[f"window:{second['id']}"][2] > boxes[f"window:{first['id']}"][2]  # second row below the first
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts[0].startswith("GTA ✓ / whole ✗") and "fallback: unparsable" in texts[1]


def test_resume_after_a_kill_and_a_changed_margin(qa_set, tmp_path, monkeypatch):
    _, path = qa_set
    stub = StubModel(load_qa(path, "qa_jsonl"))
    monkeypatch.setattr(runner_mod, "generate_answers", stub)
    make_runner(qa_set, tmp_path).run(None, None, model_id="stub")
    jsonl = tmp_path / "predictions.jsonl"
    lines = jsonl.read_text().splitlines(keepends=True)
    jsonl.write_text(lines[0] + lines[1][:40])  # killed while writing the second row
    stub.calls.clear()
    result = make_runner(qa_set, tmp_path).run(None, None, model_id="stub")
    assert result.num_generated == 1 and [len(c) for _, c in stub.calls] == [1, 1, 1]  # only item 1 again
    assert json.loads(jsonl.read_text().splitlines()[0]) == json.loads(lines[0])
    stub.calls.clear()
    result = make_runner(qa_set, tmp_path, margin_s=0.5).run(None, None, model_id="stub")  # a gta.* change
    assert result.num_generated == 2 and result.records[0]["window"] == [6.5, 9.5]
    with pytest.raises(ValueError, match="differ: model"):
        make_runner(qa_set, tmp_path).prepare("another-model")


def test_missing_videos_fail_before_the_model(qa_set, tmp_path):
    _, path = qa_set
    runner = GroundThenAnswerRunner(str(path), str(tmp_path), str(tmp_path / "out"), "qa_jsonl", frames=FRAMES)
    with pytest.raises(FileNotFoundError, match="2 of 2 videos are missing"):
        runner.prepare("stub")


@pytest.mark.parametrize(("cfg", "message"), [
    ({"task": "ground_then_answer", "data": {}}, "task=ground_then_answer: data is not a multiple-choice QA set"),
    ({"task": "tvg", "data": {"qa_format": "mlvu"}}, "task=tvg: data.qa_format=mlvu is a multiple-choice QA set"),
    ({"task": "ground_then_answer", "data": {"qa_format": "mcq"}}, "data.qa_format='mcq': choose one of video_mme"),
    ({"task": "ground_then_answer", "data": {"qa_format": "mlvu"}, "gta": {"margin_s": -1}},
     r"gta.margin_s=-1: must be >= 0"),
    ({"task": "ground_then_answer", "data": {"qa_format": "mlvu"}, "gta": {"window_note": "yes"}},
     "gta.window_note='yes': expected true or false"),
    ({"task": "answer", "data": {}}, "task='answer': choose one of tvg, tal, ground_then_answer"),
    ({"task": "ground_then_answer", "data": {"qa_format": "mlvu"}, "video_ablation": "blank"},
     "video_ablation: not supported with task=ground_then_answer"),
])
def test_config_checks(cfg, message):
    with pytest.raises(ConfigError, match=message):
        check_eval_config(cfg)


def test_config_accepts_a_qa_set():
    check_eval_config({"task": "ground_then_answer", "data": {"qa_format": "qa_jsonl"}, "gta": {"margin_s": 0}})


@pytest.mark.parametrize(("data", "qa_format", "annotation"), [
    ("video_mme", "video_mme", "video_mme/videomme/test-00000-of-00001.parquet"),
    ("longvideobench", "longvideobench", "longvideobench/lvb_val.json"),
    ("mlvu", "mlvu", "mlvu/MLVU/json"),
    ("synthetic_qa", "qa_jsonl", "synthetic_qa/test.jsonl"),
])
def test_shipped_qa_configs_compose_check_and_build_the_runner(tmp_path, data, qa_format, annotation):
    from hydra.utils import instantiate

    from museg_lit.config import compose

    cfg = compose(["task=ground_then_answer", f"data={data}", f"paths.root_dir={tmp_path}"], config_name="eval")
    check_eval_config(cfg)
    runner = instantiate(cfg.gta)
    assert isinstance(runner, GroundThenAnswerRunner) and runner.qa_format == qa_format
    assert runner.annotation_file == str(tmp_path / "data" / annotation) and runner.margin_s == 2.0
    assert runner.frames.fps == 2.0 and runner.grounding_template == "frame_selection_thinking"
