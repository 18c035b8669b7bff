"""``make etbench-videos``: E.T. Bench's videos re-encoded the way MUSEG evaluated them.

MUSEG's ``data/eval/et_bench/process_videos.py`` runs ``ffmpeg -y -i SRC -map 0:v TGT`` on every
``.mp4`` / ``.mkv`` / ``.webp`` under ``videos/et_bench`` into ``videos/et_bench_processed`` (same
relative paths), and its ``eval_et_bench.py`` reads that folder by default. No ``-c copy``: the
video stream is re-encoded with ffmpeg's default encoder for the container (libx264 for ``.mp4``)
and audio dropped, which changes the decoded pixels and sometimes the frame timing, so the
published E.T. Bench numbers are for these files; ``make eval-etbench`` reads them.

Departures: outputs are written atomically (a ``.part`` name, then rename) and existing outputs
are skipped, so an interrupted run continues; files with other extensions are listed, not an
assertion failure. A missing ffmpeg or source folder prints one line, ``error: <where>: <what>``,
and exits with status 2 (:mod:`museg_lit.errors`); videos that ffmpeg fails on are listed, one
``error:`` line each, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from museg_lit.errors import user_errors

__all__ = ["VIDEO_EXTENSIONS", "plan", "reencode"]

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webp")


def plan(src_root: str | Path, dst_root: str | Path) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """``([(source, target), ...], [other files])`` for every video under ``src_root``, sorted."""
    src_root, dst_root = Path(src_root), Path(dst_root)
    jobs, others = [], []
    for path in sorted(p for p in src_root.rglob("*") if p.is_file()):
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            jobs.append((path, dst_root / path.relative_to(src_root)))
        else:
            others.append(path)
    return jobs, others


def _reencode_one(ffmpeg: str, src: Path, dst: Path) -> str | None:
    if dst.is_file() and dst.stat().st_size > 0:
        return None
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(f"{dst.stem}.part{dst.suffix}")  # ffmpeg picks the container by extension
    proc = subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(src), "-map", "0:v", str(part)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        part.unlink(missing_ok=True)
        return f"{src}: ffmpeg failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
    os.replace(part, dst)
    return None


def reencode(src_root: str | Path, dst_root: str | Path, workers: int | None = None) -> list[str]:
    """Re-encode every video (video stream only); returns the failures (one line each).

    Raises:
        FileNotFoundError: no ``ffmpeg`` on the PATH, or ``src_root`` is not a folder.
    """
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise FileNotFoundError("ffmpeg: not found on the PATH; install it (apt-get install ffmpeg, or make install)")
    if not Path(src_root).is_dir():
        raise FileNotFoundError(f"{src_root}: no such folder; unpack E.T. Bench's videos/<source>.tar.gz there")
    jobs, others = plan(src_root, dst_root)
    for path in others:
        print(f"not a video, left out: {path}")
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        failures = [f for f in pool.map(lambda job: _reencode_one(ffmpeg, *job), jobs) if f]
    print(f"{len(jobs) - len(failures)} of {len(jobs)} videos in {dst_root}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Re-encode E.T. Bench videos as MUSEG evaluated them")
    parser.add_argument("src", help="E.T. Bench videos (videos/et_bench)")
    parser.add_argument("dst", help="output folder (videos/et_bench_processed)")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    with user_errors(FileNotFoundError):  # one line, exit 2
        failures = reencode(args.src, args.dst, args.workers)
    for line in failures:
        print(f"error: {line}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
