"""Evaluation pictures: every plot writes a non-empty PNG for single- and multi-segment records,
including samples without a prediction and broken videos, and draws the data it is given (bars at the
segments' seconds, histogram heights = IoU counts, the mean line at m_iou, the curve's points =
MUSEG's metrics), checked on the figures the ``*_figure`` functions build."""

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


# ---------------------------------------------------------------------------- what is drawn

# IoUs by hand: 2-8 vs 2-8 -> 1; 12.5-30 vs 10-20 -> 7.5 / 20 = 0.375; no answer tag -> none (0);
# a broken video -> none (0). m_iou = 1.375 / 4 = 0.34375; IoU >= 0.1, 0.3: 2 of 4; >= 0.5, 0.7: 1 of 4.
FOUR = [
    record(0, [[2.0, 8.0]], "<answer>2-8</answer>", question="q: person opens a door."),
    record(1, [[10.0, 20.0]], "<answer>12.5-30</answer>", question="q: person sits down."),
    record(2, [[3.0, 4.0]], "I am not sure", question="q: person eats."),
    record(3, [[3.0, 4.0]], "", duration=None, error="moov atom not found", question="q: person stands up."),
]


def _extent(collection) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) of a broken_barh collection's single bar."""
    (path,) = collection.get_paths()
    x, y = path.vertices[:, 0], path.vertices[:, 1]
    return float(x.min()), float(x.max()), float(y.min()), float(y.max())


def test_timeline_draws_each_row_at_its_rank_with_its_segments():
    from museg_lit.evaluation.plots import timeline_figure

    fig = timeline_figure(FOUR, num=12, title="cs")
    (ax,) = fig.axes
    # ranked by IoU, best on top; ties (two zeros) keep file order
    assert [t.get_text() for t in ax.get_yticklabels()] == ["person opens a door", "person sits down", "person eats",
                                                           "person stands up"]
    bars = {c.get_gid(): _extent(c) for c in ax.collections}
    assert bars["gt:0"][:2] == (2.0, 8.0) and bars["pred:0"][:2] == (2.0, 8.0) and bars["video:0"][:2] == (0.0, 30.0)
    assert bars["gt:1"][:2] == (10.0, 20.0) and bars["pred:1"][:2] == (12.5, 30.0)
    assert bars["gt:1"][2:] == pytest.approx((1 - 0.36, 1 - 0.02))  # row 1, upper half
    assert bars["pred:1"][2:] == pytest.approx((1 + 0.02, 1 + 0.36))  # row 1, lower half
    assert "pred:2" not in bars and "pred:3" not in bars  # no prediction: nothing drawn
    assert bars["video:3"][:2] == (0.0, 4.0)  # no duration: the video bar ends at the last segment
    notes = [t.get_text().split("  ·  ")[0] for t in ax.texts]
    assert notes == ["IoU 1.00", "IoU 0.38", "no prediction", "video error"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ground truth", "prediction", "video length"]
    assert ax.get_xlabel() == "time in the video (s)"
    assert fig.get_suptitle().startswith("cs: 4 of 4 queries, ranked by IoU")


def test_timeline_samples_num_rows_over_the_ranking():
    from museg_lit.evaluation.plots import timeline_figure

    ax = timeline_figure(RECORDS, num=8, task="tal").axes[0]
    assert len(ax.get_yticks()) == 8 and sum(c.get_gid().startswith("video:") for c in ax.collections) == 8


def test_histogram_bars_are_the_iou_counts_and_the_line_is_m_iou():
    from museg_lit.evaluation.plots import iou_histogram_figure

    ax = iou_histogram_figure(FOUR, title="cs").axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert len(heights) == 21  # 20 IoU bins of 0.05 and the "none" bar
    assert heights[7] == 1 and heights[19] == 1 and sum(heights[:20]) == 2  # 0.375 in [0.35, 0.4), 1.0 in the last
    assert heights[20] == 2 and ax.patches[20].get_x() == pytest.approx(-0.1)  # two samples without a prediction
    m_iou = grounding_metrics([r["output"] for r in FOUR], [r["groundtruth"] for r in FOUR], "tvg")["m_iou"]
    assert m_iou == pytest.approx(0.34375)
    mean_line = ax.get_lines()[0]
    assert tuple(mean_line.get_xdata()) == pytest.approx((m_iou, m_iou))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "mean IoU (all samples) 0.344", "with a prediction", "no prediction"]
    assert ax.get_title() == "cs  (4 samples, 2 without a prediction)" and ax.get_ylabel() == "samples"


def test_histogram_of_a_multi_segment_set_counts_ground_truth_segments():
    from museg_lit.evaluation.plots import iou_histogram_figure

    # record 2: gt 0-5 and 9-12 vs preds 0-4, 9-12, 20-22 -> best IoUs 0.8 and 1.0; records 3 and 4: none
    ax = iou_histogram_figure(RECORDS[2:5], task="tal").axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights[16] == 1 and heights[19] == 1 and sum(heights[:20]) == 2 and heights[20] == 2
    assert ax.get_ylabel() == "ground-truth segments"


def test_recall_curve_is_the_share_above_each_threshold_and_marks_museg_points():
    from museg_lit.evaluation.plots import recall_curve_figure

    ax = recall_curve_figure(FOUR, title="cs").axes[0]
    (curve,) = ax.get_lines()
    xs, ys = curve.get_xdata(), curve.get_ydata()
    assert len(xs) == 100 and xs[0] == pytest.approx(0.01) and xs[-1] == 1.0
    # IoUs 1, 0.375, 0, 0: 50 % up to 0.375, then 25 % up to 1
    assert ys[xs.tolist().index(0.37)] == 50 and ys[xs.tolist().index(0.38)] == 25 and ys[-1] == 25
    m = grounding_metrics([r["output"] for r in FOUR], [r["groundtruth"] for r in FOUR], "tvg")
    (points,) = ax.collections
    assert points.get_offsets().ravel().tolist() == pytest.approx(
        [v for t in (0.1, 0.3, 0.5, 0.7) for v in (t, 100 * m[f"f1_single_{t}"])])
    assert [100 * m[f"f1_single_{t}"] for t in (0.1, 0.3, 0.5, 0.7)] == [50, 50, 25, 25]
    assert [t.get_text() for t in ax.texts] == ["50.0", "50.0", "25.0", "25.0"]
    assert ax.get_title() == "cs  mIoU 34.4  (4 samples)"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("IoU threshold", "%")


def test_recall_curve_of_a_multi_segment_set_marks_f1_multi():
    from museg_lit.evaluation.plots import recall_curve_figure

    ax = recall_curve_figure(RECORDS, task="tal").axes[0]
    m = grounding_metrics([r["output"] for r in RECORDS], [r["groundtruth"] for r in RECORDS], "tal")
    assert ax.collections[0].get_offsets()[:, 1].tolist() == pytest.approx(
        [100 * m[f"f1_multi_{t}"] for t in (0.1, 0.3, 0.5, 0.7)])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "recall of ground-truth segments", "precision of predicted segments", "F1 (MUSEG's f1_multi_t)"]
    assert f"mean F1 {100 * m['mean_f1_multi']:.1f}" in ax.get_title()
