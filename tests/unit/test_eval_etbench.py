"""E.T. Bench scoring (MUSEG's E.T. Bench protocol): answer parsing and hand-worked metrics per task."""

from __future__ import annotations

import doctest
import json

import pytest

from museg_lit.evaluation import etbench
from museg_lit.evaluation.etbench import (
    ETBenchBenchmark,
    is_etbench_file,
    load_etbench_items,
    parse_timestamps,
    score_task,
)


def rows(task: str, answers: list[str], tgt) -> list[dict]:
    return [{"answer": a, "groundtruth": tgt} for a in answers]


def test_doctests():
    assert doctest.testmod(etbench).failed == 0


@pytest.mark.parametrize(("answer", "expected"), [
    ("The event happens in 2.5 - 4.8 seconds.", [[2.5, 4.8]]),
    ("9-7", [[7.0, 9.0]]),  # reversed pairs are reordered
    ("from 3 to 6.5", [[3.0, 6.5]]),
    ("it starts at 3\nit ends at 6", [[3.0, 6.0]]),  # keyword sentences, first number each
    ("it starts at 3. it ends at 6.", None),  # one sentence (split on !?\n only) -> one number -> none
    ("1..5 - 3", None),  # unparsable number: failed (the reference script would crash)
    ("", None),
])
def test_parse_timestamps(answer, expected):
    assert parse_timestamps(answer) == expected


def test_tvg_by_hand():
    # gt 0-10: "2 - 7" IoU 0.5, "0 - 10" IoU 1, "no idea" failed (counts 0)
    out = score_task("tvg", rows("tvg", ["2 - 7", "0 - 10", "no idea"], [0, 10]))
    assert out["failed"] == 1 and out["m_iou"] == 0.5
    assert (out["f1_0.1"], out["f1_0.5"], out["f1_0.7"]) == (0.66667, 0.66667, 0.33333)
    assert out["f1"] == round((2 + 2 + 2 + 1) / 3 / 4, 5)


def test_tem_takes_the_best_ground_truth():
    # gt segments 0-2 and 10-14; prediction 10-12 -> IoU 0.5 with the second
    out = score_task("tem", rows("tem", ["10 - 12"], [[0, 2], [10, 14]]))
    assert out["m_iou"] == 0.5 and out["r_0.5"] == 1.0 and out["r_0.7"] == 0.0 and out["m_rec"] == 0.75


def test_tal_by_hand():
    # gt 0-10, 20-30; preds 0-10 (IoU 1), 40-50 (0): at every threshold recall 1/2, precision 1/2 -> F1 0.5
    out = score_task("tal", rows("tal", ["0-10 40-50", "nothing"], [[0, 10], [20, 30]]))
    assert out["failed"] == 1 and out["f1_0.5"] == 0.25 and out["f1"] == 0.25


def test_evs_per_second_f1_over_predicted_samples():
    # gt seconds 0..9, pred 5..14: tp 5, fp 5, fn 5 -> F1 0.5; the failed sample is not averaged in (reference quirk)
    out = score_task("evs", rows("evs", ["5 - 15", "no timestamps"], [[0, 10]]))
    assert out == {"total": 2, "failed": 1, "f1": 0.5}


def test_evs_overlapping_predictions_count_once():
    # gt 0-10, preds 0-10 and 5-15 overlap on 5-10. MUSEG's compute_metrics assigns pred_map[s:e] = 2:
    # cells 0-9 tp 10, 10-14 fp 5, fn 0 -> P 10/15, R 1, F1 = 2 * 10 / (2 * 10 + 5) = 0.8.
    # (Adding would make cells 5-9 worth 5, neither tp nor fp: tp 5, fp 5, fn 0 -> 0.6667.)
    out = score_task("evs", rows("evs", ["0 - 10, 5 - 15"], [[0, 10]]))
    assert out == {"total": 1, "failed": 0, "f1": 0.8}


def test_vhd_hit_within_any_annotator():
    tgt = [[[1, 5]], [[3, 8]]]  # two annotators
    out = score_task("vhd", rows("vhd", ["The highlight is at 7.5 s", "9", "none"], tgt))
    assert out == {"total": 3, "failed": 1, "f1": round(1 / 3, 5)}


def _write(tmp_path, records):
    path = tmp_path / "etbench.json"
    path.write_text(json.dumps(records))
    return path


def _rec(idx, task, source):
    return {"version": 1.0, "idx": idx, "task": task, "source": source, "video": f"{source}/{idx}.mp4",
            "duration": 30.0, "q": "When?", "tgt": [1, 2]}


def test_loader_subset_tasks_and_unknown_tasks(tmp_path):
    path = _write(tmp_path, [_rec(0, "tvg", "charades_sta"), _rec(1, "tvg", "charades_sta"), _rec(2, "tal", "thumos14"),
                             _rec(3, "dvc", "youcook2")])
    assert is_etbench_file(path)
    assert len(load_etbench_items(path)) == 4  # all 12 tasks are scored now (dvc included)
    with pytest.raises(ValueError, match="data.tasks: unknown E.T. Bench tasks \\['xyz'\\]"):
        load_etbench_items(path, tasks=["tvg", "xyz"])
    items = load_etbench_items(path, tasks=["tvg", "tal"])
    assert [it.id for it in items] == ["tvg/charades_sta/0", "tvg/charades_sta/1", "tal/thumos14/2"]
    subset = tmp_path / "subset.json"
    subset.write_text(json.dumps({"tvg": {"charades_sta": [1]}, "dvc": {"youcook2": [3]}}))
    assert [it.id for it in load_etbench_items(path, subset, tasks=["tvg", "tal"])] == ["tvg/charades_sta/1"]


def test_evaluation_and_grounding_samples_come_from_one_reader(tmp_path):
    from museg_lit.data.annotations import ET_BENCH_TASKS, AnnotationError, load_et_bench_json
    from museg_lit.evaluation.etbench_metrics import ALL_TASKS

    assert ET_BENCH_TASKS == ALL_TASKS  # the reader knows the scorer's 12 tasks, in its order
    path = _write(tmp_path, [_rec(0, "tvg", "charades_sta"), _rec(1, "tal", "thumos14"), _rec(2, "rar", "star")])
    items = load_etbench_items(path, tasks=["tvg", "tal"])
    samples = load_et_bench_json(path, tasks=["tvg", "tal"])
    assert [it.id for it in items] == [s.idx for s in samples] == ["tvg/charades_sta/0", "tal/thumos14/1"]
    assert [it.question for it in items] == [s.problem for s in samples]
    assert items[0].groundtruth == [1, 2] and samples[0].solution == [[1.0, 2.0]]  # raw for the scorer, segments for grounding
    bad = _write(tmp_path, [{**_rec(0, "tvg", "charades_sta"), "task": "xyz"}])
    for load in (load_etbench_items, load_et_bench_json):  # the same message from both sides
        with pytest.raises(AnnotationError, match=r"\[0\]: unknown E.T. Bench task 'xyz'"):
            load(bad)


def test_benchmark_scores_grounding_f1_over_the_five_tasks(tmp_path):
    recs = [_rec(i, t, s) for i, (t, s) in enumerate(
        [("tvg", "a"), ("epm", "b"), ("tal", "c"), ("evs", "d"), ("vhd", "e"), ("tem", "f")])]
    recs[3]["tgt"], recs[4]["tgt"], recs[5]["tgt"] = [[0, 10]], [[0, 10]], [[1, 2]]
    recs[2]["tgt"] = [[1, 2]]
    bench = ETBenchBenchmark(tasks=list(etbench.SUPPORTED_TASKS))
    items = bench.load(_write(tmp_path, recs))
    assert bench.question(items[0]).startswith("When? First, output reasoning process")
    # every answer "<answer>1 - 2</answer>": tvg/epm/tal/tem exact, evs 1-2 in gt 0-10 (F1 2/11), vhd 1 in 0-10 (hit)
    out = {it.id: {"output": "<answer>1 - 2</answer>", **bench.record(it, "<answer>1 - 2</answer>")} for it in items}
    metrics, headline, task = bench.score(items, out)
    assert headline == "grounding_f1" and task == "epm+evs+tal+tem+tvg+vhd"
    assert metrics["evs/f1"] == round(2 / 11, 5)
    assert metrics["grounding_f1"] == pytest.approx((1 + 1 + 1 + round(2 / 11, 5) + 1) / 5)
    assert metrics["tem/m_rec"] == 1.0 and out[items[0].id]["iou"] == 1.0


def test_sentence_model_key_is_checked_before_scoring(tmp_path):
    from museg_lit.errors import ConfigError
    from museg_lit.evaluation.sentsim import tiny_sentence_encoder

    recs = [_rec(0, "tvg", "charades_sta"), {**_rec(1, "rar", "perception_test"), "o": ["x", "y", "z", "w"], "p": 1}]
    path = _write(tmp_path, recs)
    bench = ETBenchBenchmark(sentsim_model=None)
    items = bench.load(path)
    with pytest.raises(ConfigError, match=r"^sentsim_model: E.T. Bench tasks rar need .*huggingface-cli download "
                                          r"sentence-transformers/all-MiniLM-L6-v2 --local-dir DIR"):
        bench.check(items)
    with pytest.raises(ConfigError, match="sentsim_model: .*nope is not a sentence-transformers model folder"):
        ETBenchBenchmark(sentsim_model=str(tmp_path / "nope")).check(items)
    ETBenchBenchmark().check([it for it in items if it.task == "tvg"])  # no task needs it: fine
    tiny_sentence_encoder(["x", "y"]).save(str(tmp_path / "st"))
    bench = ETBenchBenchmark(sentsim_model=str(tmp_path / "st"))
    items = bench.load(path)
    bench.check(items)
    # tvg "1 - 2" exact; rar "(B)" is option 1: correct. Merged columns need all their tasks: none here;
    # the headline of a partial set is its first task's key
    rows = {it.id: {"answer": a} for it, a in zip(items, ["1 - 2", "(B)"], strict=True)}
    metrics, headline, task = bench.score(items, rows)
    assert metrics["rar/perception_test/acc"] == 1.0 and metrics["tvg/f1"] == 1.0
    assert headline == "rar/acc" and task == "rar+tvg" and "avg" not in metrics
    assert bench.result["overall"]["RAR (Acc)"] == 100.0 and bench.result["merged"]["Acc (ref)"] is None


def test_subset_scoring_keeps_a_source_without_subset_samples(tmp_path):
    # evs: tvsum idx 0 in the subset, summe idx 1 not (as E.T. Bench's subset.json): summe scores 0 and halves evs
    recs = [{**_rec(0, "evs", "tvsum"), "tgt": [[0, 10]]}, {**_rec(1, "evs", "summe"), "tgt": [[0, 10]]},
            {**_rec(2, "tvg", "charades_sta"), "tgt": [0, 10]}]
    subset = tmp_path / "subset.json"
    subset.write_text(json.dumps({"evs": {"tvsum": [0]}, "tvg": {"charades_sta": [2]}}))
    bench = ETBenchBenchmark(subset_file=str(subset))
    items = bench.load(_write(tmp_path, recs))
    assert [it.id for it in items] == ["evs/tvsum/0", "tvg/charades_sta/2"]
    metrics, _, _ = bench.score(items, {it.id: {"answer": "0 - 10"} for it in items})
    assert metrics["evs/tvsum/f1"] == 1.0 and metrics["evs/summe/total"] == 0 and metrics["evs/f1"] == 0.5
    assert metrics["tvg/f1"] == 1.0
