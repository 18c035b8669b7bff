"""Synthetic grounding videos: coloured shapes visible during known intervals.

The embedded default (CPU, no network) trains on these. Each video is a real H.264 mp4 written with
PyAV; a *target* shape (colour + form) is visible during one interval (``tvg`` sample) or several
(``tal`` sample), and a distractor shape of another kind appears at other times so that the query
matters. Questions use MUSEG's own phrasings (:mod:`museg_lit.prompts`) and the samples are written
as MUSEG-schema JSONL (``idx, problem, solution, video, duration, task``), so the rest of the
pipeline cannot tell them from the real data.

Generation is deterministic from ``seed`` and happens once: the JSONL is written last and
atomically, so its presence means the data set is complete; later runs reuse it.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from museg_lit.prompts import TAL_PHRASINGS, TVG_PHRASINGS

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 220, 40),
    "white": (245, 245, 245),
    "purple": (150, 60, 200),
}
SHAPES = ("square", "circle", "triangle")


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. ``out_dir`` receives ``videos/*.mp4`` and ``<split>.jsonl``."""

    out_dir: str
    num_samples: int = 32
    seed: int = 0
    width: int = 112
    height: int = 112
    video_fps: float = 4.0
    min_duration: float = 6.0
    max_duration: float = 12.0
    tal_fraction: float = 0.5
    split: str = "train"
    # Learning-proof knobs (conf/data/synthetic_learning.yaml); the defaults keep the original draw.
    time_step: float = 0.1  # boundaries (and durations) on this grid, seconds; 0.5 = the 2-fps frame grid
    segment_seconds: tuple[float, float] | None = None  # target interval lengths; None: random cuts, >= 1 s
    distinct_colours: bool = False  # the distractor never shares the target's colour
    # A clock in the pixels, so that the time of a frame can be read from its own visual token:
    # "bar": an orange bar along the bottom edge, t / max_duration of the width at time t;
    # "background": the grey level of the background rises from 20 to 180 over max_duration.
    clock: str = "none"
    shape_radius: float | None = None  # fraction of min(H, W); None: 1/6 at the thirds. Set: at the quadrant centres
    distractor_fraction: float = 1.0  # share of the videos that also show a distractor (another shape)

    def __post_init__(self):
        if not self.time_step > 0:
            raise ValueError(f"synthetic.time_step must be > 0, got {self.time_step}")
        if self.clock not in CLOCKS:
            raise ValueError(f"synthetic.clock must be one of {list(CLOCKS)}, got {self.clock!r}")
        if self.shape_radius is not None and not 0 < self.shape_radius <= 0.25:
            raise ValueError(f"synthetic.shape_radius must be in (0, 0.25] (a quadrant), got {self.shape_radius}")
        if not 0.0 <= self.distractor_fraction <= 1.0:
            raise ValueError(f"synthetic.distractor_fraction must be in [0, 1], got {self.distractor_fraction}")
        if self.segment_seconds is not None:
            lo, hi = (float(x) for x in self.segment_seconds)
            if not 0 < lo <= hi or 3 * hi + 1.0 > self.min_duration:
                raise ValueError(f"synthetic.segment_seconds={list(self.segment_seconds)} must satisfy 0 < min <= max "
                                 f"and 3 * max + 1 <= min_duration={self.min_duration} (three intervals must fit)")

    @property
    def jsonl_path(self) -> Path:
        return Path(self.out_dir) / f"{self.split}.jsonl"


def _mask(kind: str, h: int, w: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == "square":
        return (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
    if kind == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    # triangle pointing up: inside if below the apex and within the widening sides
    return (yy >= cy - r) & (yy <= cy + r) & (abs(xx - cx) <= (yy - (cy - r)) / 2)


def _snap(x: float, step: float) -> float:
    """``x`` on the ``step`` grid, as a short decimal (``round(x, 1)`` for the default 0.1 s)."""
    return round(x, 1) if step == 0.1 else round(round(x / step) * step, 6)


def _placed_intervals(
    rng: random.Random, duration: float, count: int, lengths: tuple[float, float], step: float, gap: float = 0.5
) -> list[list[float]]:
    """``count`` disjoint, sorted intervals of lengths drawn from ``lengths``, placed uniformly at random
    in [0, duration] at least ``gap`` apart, every boundary on the ``step`` grid (counted in grid units)."""
    units = int(math.floor(duration / step + 1e-9))
    sizes = [max(1, round(rng.uniform(*lengths) / step)) for _ in range(count)]  # grid units
    gap_units = math.ceil(gap / step - 1e-9)
    free = max(0, units - sum(sizes) - gap_units * (count - 1))
    cuts = sorted(rng.randint(0, free) for _ in range(count))  # free units before each interval
    segs, start = [], 0
    for i, (size, cut) in enumerate(zip(sizes, cuts, strict=True)):
        start = cut + sum(sizes[:i]) + gap_units * i
        segs.append([round(start * step, 6), round(min(start + size, units) * step, 6)])
    return segs


def _draw_intervals(
    rng: random.Random, duration: float, count: int, min_len: float = 1.0
) -> list[list[float]]:
    """``count`` disjoint, sorted intervals inside [0, duration], rounded to 0.1 s."""
    for _ in range(200):
        cuts = sorted(round(rng.uniform(0.0, duration), 1) for _ in range(2 * count))
        segs = [[cuts[2 * i], cuts[2 * i + 1]] for i in range(count)]
        gaps_ok = all(segs[i + 1][0] - segs[i][1] >= 0.5 for i in range(count - 1))
        if all(e - s >= min_len for s, e in segs) and gaps_ok:
            return segs
    # fall back to an even split (only reached for very short videos)
    step = duration / count
    return [[round(i * step + 0.1, 1), round((i + 1) * step - 0.1, 1)] for i in range(count)]


TIMER_RGB = (255, 140, 0)  # orange: no shape has this colour
CLOCKS = ("none", "bar", "background")
BACKGROUND = 40  # grey level of the background without a background clock


def background_level(t: float, clock_seconds: float) -> int:
    """Grey level of the background at time ``t`` under ``clock="background"``: 20 at 0, 180 at the end."""
    return 20 + int(round(160 * min(1.0, max(0.0, t / clock_seconds))))


def _write_video(
    path: Path, duration: float, fps: float, size: tuple[int, int],
    events: list[tuple[str, str, list[list[float]], tuple[int, int]]], clock: str = "none",
    clock_seconds: float = 1.0, radius: int | None = None,
) -> None:
    """Render and encode; ``events`` = (colour, shape, intervals, centre). ``clock`` (see
    :class:`SyntheticSpec`) writes the time into the pixels, as a fraction of ``clock_seconds``.
    Atomic write."""
    h, w = size
    n_frames = int(round(duration * fps))
    radius = radius or max(6, min(h, w) // 6)
    masks = [(_mask(shape, h, w, cy, cx, radius), COLOURS[colour], segs) for colour, shape, segs, (cy, cx) in events]
    fd, tmp = tempfile.mkstemp(suffix=".mp4", dir=path.parent)
    os.close(fd)
    try:
        with av.open(tmp, mode="w") as container:
            stream = container.add_stream("libx264", rate=int(fps) if float(fps).is_integer() else fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"preset": "veryfast", "crf": "20", "g": str(int(2 * fps))}
            for i in range(n_frames):
                t = (i + 0.5) / fps  # a frame shows what happens at its centre time
                grey = background_level(t, clock_seconds) if clock == "background" else BACKGROUND
                img = np.full((h, w, 3), grey, dtype=np.uint8)  # [H, W, 3]
                for mask, rgb, segs in masks:
                    if any(s <= t < e for s, e in segs):
                        img[mask] = rgb
                if clock == "bar":
                    img[h - max(2, h // 8):, : int(round(min(1.0, t / clock_seconds) * w))] = TIMER_RGB
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def generate_synthetic_dataset(spec: SyntheticSpec) -> Path:
    """Write videos and the JSONL for ``spec`` unless already present; returns the JSONL path."""
    if spec.jsonl_path.exists():
        return spec.jsonl_path
    rng = random.Random(spec.seed)
    out = Path(spec.out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    kinds = [(c, s) for c in COLOURS for s in SHAPES]
    pairs = [(t, d) for t in kinds for d in kinds if t != d and (not spec.distinct_colours or t[0] != d[0])]
    h, w = spec.height, spec.width
    if spec.shape_radius is None:
        positions = [(h // 3, w // 3), (2 * h // 3, 2 * w // 3), (h // 3, 2 * w // 3), (2 * h // 3, w // 3)]
        radius = None
    else:  # one shape per quadrant, filling it: the colour dominates the frame's visual token
        positions = [(h // 4, w // 4), (3 * h // 4, 3 * w // 4), (h // 4, 3 * w // 4), (3 * h // 4, w // 4)]
        radius = max(2, int(spec.shape_radius * min(h, w)))
    lines = []
    for i in range(spec.num_samples):
        duration = _snap(rng.uniform(spec.min_duration, spec.max_duration), spec.time_step)
        task = "tal" if rng.random() < spec.tal_fraction else "tvg"
        target, distractor = rng.sample(kinds, 2) if not spec.distinct_colours else rng.choice(pairs)
        count = rng.randint(2, 3) if task == "tal" else 1
        if spec.segment_seconds is None:
            segs = _draw_intervals(rng, duration, count)
            distractor_segs = _draw_intervals(rng, duration, 1)
        else:
            segs = _placed_intervals(rng, duration, count, spec.segment_seconds, spec.time_step)
            distractor_segs = _placed_intervals(rng, duration, 1, spec.segment_seconds, spec.time_step)
        pos_t, pos_d = rng.sample(positions, 2)
        events = [(*target, segs, pos_t), (*distractor, distractor_segs, pos_d)]
        if spec.distractor_fraction < 1.0 and rng.random() >= spec.distractor_fraction:  # no draw at 1.0
            events = events[:1]
        name = f"videos/{spec.split}_{spec.seed}_{i:05d}.mp4"
        _write_video(out / name, duration, spec.video_fps, (h, w), events, clock=spec.clock,
                     clock_seconds=spec.max_duration, radius=radius)
        colour, shape = target
        if task == "tvg":
            query = f"a {colour} {shape} appears"
            problem = rng.choice(TVG_PHRASINGS).replace("{}", query)
        else:
            problem = rng.choice(TAL_PHRASINGS).replace("{}", f"{colour} {shape}")
        lines.append(json.dumps({"idx": i, "problem": problem, "solution": segs, "video": name,
                                 "duration": duration, "task": task}))
    fd, tmp = tempfile.mkstemp(suffix=".jsonl", dir=out)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, spec.jsonl_path)
    return spec.jsonl_path
