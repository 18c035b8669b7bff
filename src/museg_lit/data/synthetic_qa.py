"""A generated multiple-choice QA set whose answers need the right segment of the video.

Each video shows ``num_events`` shapes one after another (distinct colours, random forms, at the
centre of the frame, separated by empty gaps); one question per video asks about a *neighbour* of
a named shape, so the answer is only visible around that shape:

* ``colour_after``: "What colour is the shape that appears right after the red circle?" - options
  are colours, the distractors drawn first from the other shapes of the same video;
* ``shape_before``: "Which shape appears right before the blue square?" - options are
  "<colour> <form>" of the other shapes of the video.

Four options, the correct letter spread by a seeded shuffle, and the evidence segment known: from
the start of the earlier of the two shapes to the end of the later one. Written as the project's
QA JSONL (``qa_jsonl``, :mod:`museg_lit.evaluation.qa.loaders`); videos are rendered by the
grounding generator's encoder (:mod:`museg_lit.data.synthetic`). Deterministic from ``seed``;
written once (the JSONL last and atomically, so its presence means the set is complete).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

from museg_lit.data.synthetic import COLOURS, SHAPES, _write_video

__all__ = ["QUESTION_TYPES", "SyntheticQASpec", "generate_synthetic_qa"]

QUESTION_TYPES = ("colour_after", "shape_before")
NUM_OPTIONS = 4


@dataclass(frozen=True)
class SyntheticQASpec:
    """What to generate; ``out_dir`` receives ``videos/*.mp4`` and ``<split>.jsonl``."""

    out_dir: str
    num_samples: int = 8
    seed: int = 0
    width: int = 112
    height: int = 112
    video_fps: float = 4.0
    num_events: int = 4
    event_seconds: tuple[float, float] = (1.5, 2.5)
    gap_seconds: tuple[float, float] = (0.5, 1.5)
    split: str = "test"

    def __post_init__(self):
        if not 3 <= self.num_events <= len(COLOURS):
            raise ValueError(f"synthetic.num_events must be in [3, {len(COLOURS)}], got {self.num_events}")
        if self.num_samples < 1:
            raise ValueError(f"synthetic.num_samples must be >= 1, got {self.num_samples}")

    @property
    def jsonl_path(self) -> Path:
        return Path(self.out_dir) / f"{self.split}.jsonl"

    def generate(self) -> Path:
        return generate_synthetic_qa(self)


def _timeline(rng: random.Random, spec: SyntheticQASpec) -> tuple[list[list[float]], float]:
    """Event intervals (0.1 s grid) and the video duration: gap, event, gap, event, ..., gap."""
    t, segs = round(rng.uniform(*spec.gap_seconds), 1), []
    for _ in range(spec.num_events):
        length = round(rng.uniform(*spec.event_seconds), 1)
        segs.append([t, round(t + length, 1)])
        t = round(t + length + rng.uniform(*spec.gap_seconds), 1)
    return segs, t


def _options(rng: random.Random, correct: str, near: list[str], pool: list[str]) -> tuple[list[str], str]:
    """Four options: the correct one, distractors from ``near`` first, then ``pool``; shuffled."""
    distractors = [x for x in dict.fromkeys(near) if x != correct]
    rng.shuffle(distractors)
    extra = [x for x in pool if x != correct and x not in distractors]
    rng.shuffle(extra)
    options = [correct, *(distractors + extra)[: NUM_OPTIONS - 1]]
    rng.shuffle(options)
    return options, "ABCD"[options.index(correct)]


def generate_synthetic_qa(spec: SyntheticQASpec) -> Path:
    """Write the videos and the JSONL for ``spec`` unless already there; returns the JSONL path."""
    if spec.jsonl_path.exists():
        return spec.jsonl_path
    rng = random.Random(spec.seed)
    out = Path(spec.out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    centre = (spec.height // 2, spec.width // 2)
    kinds_pool = [f"{c} {s}" for c in COLOURS for s in SHAPES]
    lines = []
    for i in range(spec.num_samples):
        segs, duration = _timeline(rng, spec)
        colours = rng.sample(list(COLOURS), spec.num_events)
        shapes = [rng.choice(SHAPES) for _ in range(spec.num_events)]
        name = f"videos/{spec.split}_{spec.seed}_{i:05d}.mp4"
        _write_video(out / name, duration, spec.video_fps, (spec.height, spec.width),
                     [(c, s, [seg], centre) for c, s, seg in zip(colours, shapes, segs, strict=True)])
        kinds = [f"{c} {s}" for c, s in zip(colours, shapes, strict=True)]
        qtype = QUESTION_TYPES[i % len(QUESTION_TYPES)]
        if qtype == "colour_after":
            k = rng.randrange(spec.num_events - 1)  # the named shape; the answer is shape k + 1
            question = f"What colour is the shape that appears right after the {kinds[k]}?"
            options, answer = _options(rng, colours[k + 1], colours, list(COLOURS))
            evidence = [[segs[k][0], segs[k + 1][1]]]
        else:
            k = rng.randrange(1, spec.num_events)  # the named shape; the answer is shape k - 1
            question = f"Which shape appears right before the {kinds[k]}?"
            options, answer = _options(rng, kinds[k - 1], kinds, kinds_pool)
            evidence = [[segs[k - 1][0], segs[k][1]]]
        lines.append(json.dumps({"id": f"{spec.split}-{i:05d}", "video": name, "duration": duration,
                                 "question": question, "options": options, "answer": answer,
                                 "evidence": evidence, "question_type": qtype, "events": kinds, "segments": segs}))
    fd, tmp = tempfile.mkstemp(suffix=".jsonl", dir=out)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, spec.jsonl_path)
    return spec.jsonl_path
