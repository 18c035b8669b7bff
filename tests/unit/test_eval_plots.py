"""Evaluation pictures: every plot writes a non-empty PNG for single- and multi-segment records,
including samples without a prediction and broken videos."""

from __future__ import annotations

import pytest
from matplotlib.image import imread

from museg_lit.evaluation.metrics import grounding_metrics, parse_prediction, sample_iou
from museg_lit.evaluation.plots import plot_all, short_query


def record(i, gt, output, duration=30.0, error=None, question="Find it. Now the sentence: person opens a door."):
    r = {"id": str(i), "video": f"charades/V{i}.mp4", "question": question, "groundtruth": gt, "output": output,
         "prediction": parse_prediction(output), "iou": sample_iou(output, gt), "duration": duration, "error": error}
    r["f1_multi"] = grounding_metrics([output], [gt], "tal")["mean_f1_multi"]
    return r


RECORDS = [
    record(0, [[2.0, 8.0]], "<answer>2-8</answer>"),
    record(1, [[10.0, 20.0]], "<answer>12.5-30</answer>"),
    record(2, [[0.0, 5.0], [9.0, 12.0]], "<answer>0-4 9-12 20-22</answer>", question="the action 'billiards'."),
    record(3, [[3.0, 4.0]], "I am not sure"),
    record(4, [[3.0, 4.0]], "", duration=None, error="moov atom not found"),
] + [record(5 + i, [[i, i + 3.0]], f"<answer>{i + 1}-{i + 2.5}</answer>") for i in range(20)]


@pytest.mark.parametrize("task", ["tvg", "tal"])
def test_plot_all_writes_three_pngs(tmp_path, task):
    files = plot_all(RECORDS, tmp_path, title="charades_sta", task=task, num_timeline=8)
    assert set(files) == {"timeline", "iou_hist", "recall_curve"}
    for path in files.values():
        image = imread(path)
        assert image.shape[0] > 300 and image.shape[1] > 600  # a readable size, not an empty canvas
        assert image[..., :3].std() > 0.01


def test_plots_survive_no_predictions_at_all(tmp_path):
    files = plot_all([record(0, [[1.0, 2.0]], "junk"), record(1, [[0.0, 3.0]], "", error="gone")], tmp_path, title="x")
    assert all(p.stat().st_size > 0 for p in files.values())


def test_short_query():
    assert short_query("Now I will give you the textual sentence: person turn a light on.") == "person turn a light on"
    assert short_query("all the visual events of the action category: 'billiards'.") == "billiards"
    assert len(short_query("x" * 100)) == 42
