"""A small E.T. Bench in E.T. Bench's format over generated videos, for CPU end-to-end runs of all 12 tasks.

:func:`generate_etbench_synthetic` writes ``et_bench.json`` (the fields of E.T. Bench's annotation:
``idx``, ``task``, ``source``, ``video``, ``duration``, ``q``, ``tgt``, ``o``, ``p``, ``g``),
``subset.json`` (half of each source) and ``videos/`` (coloured shapes appearing during the
ground-truth segments, :mod:`museg_lit.data.synthetic`'s renderer); with ``sentsim=True`` also
``sentsim/``, a tiny bag-of-words sentence encoder over the generated captions and options
(:func:`museg_lit.evaluation.sentsim.tiny_sentence_encoder`) to pass as ``sentsim_model=DIR``.
The questions paraphrase E.T. Bench's; a random tiny model scores near zero on them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from museg_lit.data.synthetic import COLOURS, SHAPES, _write_video
from museg_lit.evaluation.etbench_metrics import ALL_TASKS

__all__ = ["SOURCES", "generate_etbench_synthetic"]

# one source per task (E.T. Bench's names), so the runner's per-source rows look like the real ones
SOURCES = {"rar": "perception_test", "eca": "charades_sta", "rvq": "star", "tvg": "charades_sta",
           "epm": "ego4d_nlq", "tal": "thumos14", "evs": "tvsum", "vhd": "qvhighlights", "dvc": "youcook2",
           "slc": "cross_task", "tem": "perception_test", "gvq": "qa_ego4d"}


def _caption(colour: str, shape: str) -> str:
    return f"a {colour} {shape} appears"


def generate_etbench_synthetic(out_dir: str | Path, per_task: int = 2, num_videos: int = 3, duration: float = 8.0,
                               seed: int = 0, sentsim: bool = True) -> Path:
    """Write the set into ``out_dir`` (videos rendered once; existing ones are kept); returns ``out_dir``."""
    out = Path(out_dir)
    rng = random.Random(seed)
    videos = []
    for v in range(num_videos):
        colour, shape = rng.choice(sorted(COLOURS)), rng.choice(SHAPES)
        s = round(rng.uniform(0.5, duration / 2), 1)
        seg = [s, round(min(duration - 0.5, s + rng.uniform(1.5, 3.5)), 1)]
        path = out / "videos" / "synthetic" / f"v{v}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            _write_video(path, duration, 2.0, (112, 112), [(colour, shape, [seg], (56, 56))])
        videos.append((f"synthetic/v{v}.mp4", colour, shape, seg))
    options = [_caption(c, s) for c in sorted(COLOURS)[:2] for s in SHAPES[:2]]  # 4 options
    records = []
    for task in ALL_TASKS:
        for k in range(per_task):
            video, colour, shape, seg = videos[(len(records) + k) % num_videos]
            cap = _caption(colour, shape)
            rec = {"idx": k, "task": task, "source": SOURCES[task], "video": video, "duration": duration}
            if task in ("rar", "eca", "rvq", "gvq"):
                o = [cap] + [x for x in options if x != cap][:3]
                rng.shuffle(o)
                listed = " ".join(f"({letter}) {x}" for letter, x in zip("ABCD", o, strict=True))
                rec.update(q=f"What happens in the video? Options: {listed}", o=o, p=o.index(cap))
                if task == "gvq":
                    rec.update(tgt=seg)
            elif task in ("tvg", "epm"):
                rec.update(q=f"When does '{cap}' happen? Answer 'a - b' in seconds.", tgt=seg)
            elif task in ("tal", "evs", "tem"):
                rec.update(q=f"Find every segment where '{cap}'.", tgt=[seg])
            elif task == "vhd":
                rec.update(q=f"At which second is the highlight of '{cap}'?", tgt=[[seg]])
            else:  # dvc, slc
                rec.update(q="Describe each event with its start and end time.", tgt=[seg], g=[cap])
            records.append(rec)
    (out / "et_bench.json").write_text(json.dumps(records, indent=1))
    subset: dict[str, dict[str, list[int]]] = {}
    for r in records:
        if r["idx"] % 2 == 0:
            subset.setdefault(r["task"], {}).setdefault(r["source"], []).append(r["idx"])
    (out / "subset.json").write_text(json.dumps(subset))
    if sentsim and not (out / "sentsim" / "modules.json").exists():
        from museg_lit.evaluation.sentsim import tiny_sentence_encoder

        words = {w for r in records for text in (r.get("o") or []) + (r.get("g") or []) for w in text.split()}
        tiny_sentence_encoder(sorted(words | {"a", "b", "c", "d"}), dim=16, seed=seed).save(str(out / "sentsim"))
    return out
