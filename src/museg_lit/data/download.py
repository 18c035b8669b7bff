"""``make data``: MUSEG's annotation files from its repository into ``data/museg/`` (the only command
that uses the network; training and evaluation never do).

Files (paths in THUNLP-MT/MUSEG): ``data/train/stage_1.jsonl``, ``stage_2.jsonl``;
``data/eval/grounding/{charades_sta,thumos14,thumos15,perception_test}.json``;
``data/eval/et_bench/{et_bench,subset}.json``. Each is written atomically (temporary name, then
rename), checked to be JSON / JSONL, and skipped when already present. A Git LFS pointer instead
of the file is refused with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

__all__ = ["MUSEG_FILES", "download_museg"]

DEFAULT_BASE = "https://raw.githubusercontent.com/THUNLP-MT/MUSEG/main"
MUSEG_FILES = (
    "data/train/stage_1.jsonl",
    "data/train/stage_2.jsonl",
    "data/eval/grounding/charades_sta.json",
    "data/eval/grounding/thumos14.json",
    "data/eval/grounding/thumos15.json",
    "data/eval/grounding/perception_test.json",
    "data/eval/et_bench/et_bench.json",
    "data/eval/et_bench/subset.json",
)


def _check(name: str, body: bytes) -> None:
    if body.startswith(b"version https://git-lfs"):
        raise ValueError(f"{name}: the server sent a Git LFS pointer, not the file; fetch it with git lfs")
    text = body.decode("utf-8")
    if name.endswith(".jsonl"):
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{name}:{i}: not JSON ({exc.msg})") from None
    else:
        json.loads(text)


def _fetch(url: str, retries: int = 3, timeout: float = 60.0) -> bytes:
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.read()
        except OSError:
            if attempt == retries - 1:
                raise
            time.sleep(2**attempt)
    raise AssertionError("unreachable")


def download_museg(out_dir: str | Path, base_url: str = DEFAULT_BASE, files=MUSEG_FILES) -> list[Path]:
    """Download ``files`` (repository paths) into ``out_dir`` by base name; returns the local paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for rel in files:
        target = out / Path(rel).name
        paths.append(target)
        if target.is_file() and target.stat().st_size > 0:
            print(f"{target}: present")
            continue
        url = f"{base_url.rstrip('/')}/{rel}"
        try:
            body = _fetch(url)
            _check(rel, body)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"error: {url}: {exc}") from None
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(body)
        os.replace(tmp, target)
        print(f"{target}: {len(body):,} bytes")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/museg", help="folder for the files (default data/museg)")
    parser.add_argument("--base", default=DEFAULT_BASE, help="raw-file root of the MUSEG repository")
    args = parser.parse_args(argv)
    download_museg(args.out, args.base)


if __name__ == "__main__":
    sys.exit(main())
