"""The E.T. Bench table as a picture: ``etbench_table.png``, one panel per task group (REF, GND, CAP,
COM), one bar per column of the reference's Overall row (percent), the group's Merged value as a
dashed line, MUSEG's average in the title. Input: :func:`museg_lit.evaluation.etbench.etbench_metrics`' result.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from museg_lit.evaluation.etbench_metrics import OVERALL_COLUMNS
from museg_lit.evaluation.plots import _new_figure

__all__ = ["PANELS", "etbench_bars", "etbench_figure", "plot_etbench_table"]

# panel title, its Overall columns' tasks, the Merged column(s) drawn as lines
PANELS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("REF (Acc)", ("rar", "eca", "rvq"), ("Acc (ref)",)),
    ("GND (F1)", ("tvg", "epm", "tal", "evs", "vhd"), ("F1 (gnd)",)),
    ("CAP (F1, Sim)", ("dvc", "slc"), ("F1 (cap)", "Sim (cap)")),
    ("COM (Rec)", ("tem", "gvq"), ("Rec (com)",)),
)


def etbench_bars(result: dict) -> list[tuple[str, list[tuple[str, float]]]]:
    """``[(panel, [(column, percent), ...]), ...]``: the Overall columns present (a missing task has no bar)."""
    overall = result["overall"]
    return [(panel, [(col, overall[col]) for col, task, _ in OVERALL_COLUMNS
                     if task in tasks and overall.get(col) is not None]) for panel, tasks, _ in PANELS]


def etbench_figure(result: dict, title: str = "") -> Figure:
    """The figure of :func:`plot_etbench_table` (bar heights = :func:`etbench_bars`)."""
    fig = _new_figure(13.0, 3.6)
    axes = fig.subplots(1, len(PANELS), width_ratios=[max(1, len(p[1])) for p in PANELS])
    for ax, (panel, bars), (_, _, merged_cols) in zip(axes, etbench_bars(result), PANELS, strict=True):
        labels = [c.split(" ")[0] + ("\nSim" if "Sim" in c else "") for c, _ in bars]
        heights = [v for _, v in bars]
        colours = ["#8fb9e3" if "Sim" in c else "#2a6fb0" for c, _ in bars]
        drawn = ax.bar(range(len(bars)), heights, color=colours)
        ax.bar_label(drawn, fmt="%.1f", fontsize=8)
        for col, style in zip(merged_cols, ("--", ":"), strict=False):
            value = result["merged"].get(col)
            if value is not None:
                ax.axhline(value, color="#555555", linestyle=style, linewidth=1, label=f"{col} {value:.1f}")
        if any(result["merged"].get(c) is not None for c in merged_cols):
            ax.legend(fontsize=7, loc="upper right")
        ax.set_xticks(range(len(bars)), labels, fontsize=8)
        ax.set_title(panel, fontsize=10)
        ax.set_ylim(0, max([100.0, *heights]) * 1.08)
    axes[0].set_ylabel("percent")
    avg = result.get("avg")
    fig.suptitle(f"{title + ': ' if title else ''}E.T. Bench" + (f" — AVG {avg:.1f}" if avg is not None else ""))
    return fig


def plot_etbench_table(result: dict, path: str | Path, *, title: str = "") -> Path:
    """Write :func:`etbench_figure` as a PNG; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    etbench_figure(result, title).savefig(path, dpi=110)
    return path
