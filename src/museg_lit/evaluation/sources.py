"""Where each benchmark's videos come from, and the error that says so when they are missing.

All videos are checked to exist *before* the model loads; :class:`MissingVideosError` then names
how many are missing, where they were looked for and how to get them
(:func:`missing_videos_message`).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ETBENCH_SOURCE_HINT", "VIDEO_SOURCES", "MissingVideosError", "missing_videos_message"]

# Where each benchmark's videos come from (MUSEG README, "Evaluation / Data Preparation"), keyed by
# the first folder of the annotation's video paths.
VIDEO_SOURCES: dict[str, str] = {
    "charades": "Charades-STA uses the Charades videos, 480p version: Charades_v1_480.zip from the AI2 "
    "site (https://prior.allenai.org/projects/charades), unzipped into <video root>/charades/",
    "thumos14": "THUMOS14: the validation set (TH14_validation_set_mp4.zip) from the THUMOS14 site "
    "(https://www.crcv.ucf.edu/THUMOS14/), unzipped into <video root>/thumos14/",
    "thumos15": "THUMOS15: the validation set (thumos15_validation_complete.zip) from the THUMOS15 site "
    "(http://www.thumos.info/), unzipped into <video root>/thumos15/",
    "perception_test": "Perception Test: the validation videos (valid_videos.zip) linked from "
    "https://github.com/google-deepmind/perception_test, unzipped into <video root>/perception_test/",
}
ETBENCH_SOURCE_HINT = (
    "E.T. Bench: the videos of its Hugging Face dataset PolyU-ChenLab/ETBench (videos/<source>.tar.gz "
    "for each source), unpacked into <video root>/<source>/ (MUSEG re-muxes them with "
    "data/eval/et_bench/process_videos.py; optional)"
)


class MissingVideosError(FileNotFoundError):
    """Videos named by the annotations are not on disk; the message says which, where and how to get them."""


def missing_videos_message(missing: list[Path], total: int, video_root: str | Path, dataset: str,
                           etbench: bool = False) -> str:
    """``<dataset>: N of M videos are missing under the video root R (looked for ...). How to get them: ...``
    (the hints of :data:`VIDEO_SOURCES` for the folders with missing videos, or E.T. Bench's)."""
    root = Path(video_root).resolve()
    examples = ", ".join(str(p) for p in missing[:3]) + (", ..." if len(missing) > 3 else "")
    folders = sorted({p.relative_to(root).parts[0] for p in missing if p.is_relative_to(root)})
    hints = [VIDEO_SOURCES[f] for f in folders if f in VIDEO_SOURCES]
    if etbench or not hints:
        hints.append(ETBENCH_SOURCE_HINT if etbench else "see the README section 'Evaluation'")
    return (
        f"{dataset}: {len(missing)} of {total} videos are missing under the video root {root} "
        f"(looked for {examples}). How to get them: {'; '.join(dict.fromkeys(hints))}. "
        "Then pass VIDEO_ROOT=DIR to make (or data.video_root=DIR)."
    )
