"""``make data``: MUSEG's annotation files from its repository into ``data/museg/`` (the only command
that uses the network; training and evaluation never do).

Files (paths in THUNLP-MT/MUSEG): ``data/train/stage_1.jsonl``, ``stage_2.jsonl``;
``data/eval/grounding/{charades_sta,thumos14,thumos15,perception_test}.json``;
``data/eval/et_bench/{et_bench,subset}.json``. Each is written atomically (temporary name, then
rename), checked to be JSON / JSONL, and skipped when already present. A Git LFS pointer instead
of the file is refused with a message. Failures print one line, ``error: <url>: <what>``, and
exit with status 2 (:mod:`museg_lit.errors`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from museg_lit.errors import user_errors

__all__ = ["MUSEG_FILES", "DownloadError", "download_museg"]

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


class DownloadError(RuntimeError):
    """A file could not be fetched, is not the expected JSON / JSONL, or cannot be saved; the
    message names the URL (with the line) or the local path."""


def _check(url: str, body: bytes) -> None:
    """Raise DownloadError naming ``url`` (and the line) unless ``body`` is UTF-8 JSON, or JSONL for ``.jsonl``."""
    if body.startswith(b"version https://git-lfs"):
        raise DownloadError(f"{url}: the server sent a Git LFS pointer, not the file; fetch it with git lfs")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DownloadError(f"{url}: not UTF-8 (at byte {exc.start})") from None
    if not url.endswith(".jsonl"):
        _check_json(url, text)
        return
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            _check_json(url, line, i)


def _check_json(url: str, text: str, line: int | None = None) -> None:
    """Raise DownloadError naming ``url:line`` (``line`` of a JSONL row, else the parser's) unless ``text`` is JSON."""
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise DownloadError(f"{url}:{line or exc.lineno}: not JSON ({exc.msg})") from None


def _fetch(url: str, retries: int = 3, timeout: float = 60.0) -> bytes:
    """The body at ``url``; network and server (5xx) errors are retried, client errors (404) are not."""
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.read()
        except OSError as exc:
            if attempt == retries - 1 or (isinstance(exc, urllib.error.HTTPError) and exc.code < 500):
                raise
            time.sleep(2**attempt)
    raise AssertionError("unreachable")


def _save(target: Path, body: bytes) -> None:
    """Write ``body`` to ``target`` atomically (a ``.part`` name, then rename)."""
    tmp = target.with_name(target.name + ".part")
    try:
        tmp.write_bytes(body)
        os.replace(tmp, target)
    except OSError as exc:
        raise DownloadError(f"{target}: cannot write ({exc.strerror or exc})") from None


def download_museg(out_dir: str | Path, base_url: str = DEFAULT_BASE, files=MUSEG_FILES) -> list[Path]:
    """Download ``files`` (repository paths) into ``out_dir`` by base name; returns the local paths.

    Raises:
        DownloadError: a file could not be fetched or is not JSON / JSONL (the message names the
            URL), or cannot be written (it names the local path).
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"{out}: cannot create the folder ({exc.strerror or exc})") from None
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
        except OSError as exc:
            raise DownloadError(f"{url}: {exc}") from None
        _check(url, body)
        _save(target, body)
        print(f"{target}: {len(body):,} bytes")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/museg", help="folder for the files (default data/museg)")
    parser.add_argument("--base", default=DEFAULT_BASE, help="raw-file root of the MUSEG repository")
    args = parser.parse_args(argv)
    with user_errors(DownloadError):  # one line, exit 2
        download_museg(args.out, args.base)


if __name__ == "__main__":
    sys.exit(main())
