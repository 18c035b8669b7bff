"""Make a small Charades-STA evaluation set for the tiny model: the first N queries of MUSEG's
charades_sta.json and a generated video at each of their paths (112x112, 2 fps, long enough to
hold the ground truth; a red square is visible during the ground-truth segment).

    python experiments/eval_tiny/make_subset.py --out /tmp/eval_tiny --num 24
    make eval-charades MODEL=tiny VIDEO_ROOT=/tmp/eval_tiny/videos \
        EVAL_ARGS="data.annotation_file=/tmp/eval_tiny/charades_subset.json paths.root_dir=/tmp/eval_tiny"
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from museg_lit.data.synthetic import _write_video

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "museg" / "charades_sta.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--num", type=int, default=24)
    parser.add_argument("--annotations", type=Path, default=SHARED, help="MUSEG's charades_sta.json")
    args = parser.parse_args()
    entries = json.loads(args.annotations.read_text())[: args.num]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "charades_subset.json").write_text(json.dumps(entries, indent=1))
    by_video: dict[str, list[list[float]]] = {}
    for e in entries:  # several queries share a video: it must hold all their segments
        by_video.setdefault(e["video"], []).extend(e["groundtruth"])
    for video, segments in by_video.items():
        path = args.out / "videos" / video
        path.parent.mkdir(parents=True, exist_ok=True)
        duration = math.ceil(max(end for _, end in segments)) + 2.0
        _write_video(path, duration, 2.0, (112, 112), [("red", "square", segments, (56, 56))])
    print(f"{len(entries)} queries on {len({e['video'] for e in entries})} videos in {args.out}")


if __name__ == "__main__":
    main()
