"""``gta_timeline.png``: one row per question over its video's duration, showing what stage 1
grounded and what stage 2 saw, against the question's evidence where the format has one.

Per row: the video (light grey), the evidence (green, upper half), the grounded segments (orange,
lower half), the window decoded for stage 2 (a dark outline over the whole row height; the whole
video when stage 1 fell back), and on the right whether each answer was right: ``GTA ✓ / whole ✗``.
Rows are the first ``num`` questions in file order, so reruns draw the same ones. Every drawn
rectangle carries a ``gid`` (``video:<id>``, ``evidence:<id>``, ``grounded:<id>``,
``window:<id>``), so tests read the coordinates back from the figure.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from museg_lit.evaluation.plots import GT_COLOUR, PRED_COLOUR, VIDEO_COLOUR, style_timeline_axes

__all__ = ["draw_gta_timeline", "plot_gta_timeline"]

WINDOW_COLOUR = "#1d3557"


def _label(question: str, width: int = 44) -> str:
    """The question's *end*, which names what it is about: "…right after the purple triangle?"."""
    text = " ".join(question.split())
    return text if len(text) <= width else "…" + text[-(width - 1):].lstrip()


def draw_gta_timeline(records: list[dict], *, num: int = 12, title: str = "") -> Figure:
    """The figure (not saved); see the module docstring."""
    rows = records[:num]
    fig = Figure(figsize=(11, 1.4 + 0.5 * max(len(rows), 1)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    span = 1.0
    for y, r in enumerate(rows):
        rid = r["id"]
        evidence, grounded = r.get("evidence") or [], r.get("grounded") or []
        window = r.get("window")
        length = r.get("duration") or max([e for _, e in evidence + grounded] + ([window[1]] if window else [1.0]))
        span = max(span, length)
        ax.add_patch(Rectangle((0, y - 0.42), length, 0.84, color=VIDEO_COLOUR, zorder=1, gid=f"video:{rid}"))
        for s, e in evidence:
            ax.add_patch(Rectangle((s, y - 0.36), e - s, 0.34, color=GT_COLOUR, zorder=2, gid=f"evidence:{rid}"))
        for s, e in grounded:
            ax.add_patch(Rectangle((s, y + 0.02), max(e - s, 0.003 * length), 0.34, color=PRED_COLOUR, zorder=2,
                                   gid=f"grounded:{rid}"))
        if window:
            ax.add_patch(Rectangle((window[0], y - 0.45), window[1] - window[0], 0.9, fill=False, linewidth=1.6,
                                   edgecolor=WINDOW_COLOUR, linestyle="--" if r.get("fallback") else "-", zorder=3,
                                   gid=f"window:{rid}"))
        marks = f"GTA {'✓' if r.get('gta_correct') else '✗'} / whole {'✓' if r.get('baseline_correct') else '✗'}"
        note = f"  (fallback: {r.get('fallback_reason')})" if r.get("fallback") else ""
        ax.annotate(f"{marks}  answer {r.get('answer')}: {r.get('gta_letter') or '-'} / "
                    f"{r.get('baseline_letter') or '-'}{note}", (1.005, y), xycoords=("axes fraction", "data"),
                    va="center", fontsize=8.5, color="#1a7f37" if r.get("gta_correct") else "#b42318")
    ax.set_yticks(range(len(rows)), [_label(str(r.get("question", ""))) for r in rows], fontsize=8.5)
    style_timeline_axes(ax, len(rows), span)
    ax.legend(handles=[Patch(color=GT_COLOUR, label="evidence"), Patch(color=PRED_COLOUR, label="grounded (stage 1)"),
                       Patch(fill=False, edgecolor=WINDOW_COLOUR, label="window decoded (stage 2; dashed: fallback)"),
                       Patch(color=VIDEO_COLOUR, label="video")],
              loc="lower left", bbox_to_anchor=(0, 1.0), ncol=4, frameon=False, fontsize=8.5)
    fig.suptitle(f"{title}: ground-then-answer, {len(rows)} of {len(records)} questions "
                 "(right: correct? ground-then-answer / whole video)", fontsize=10, x=0.01, ha="left")
    return fig


def plot_gta_timeline(records: list[dict], path: str | Path, *, num: int = 12, title: str = "") -> Path:
    draw_gta_timeline(records, num=num, title=title).savefig(path, dpi=110)
    return Path(path)
