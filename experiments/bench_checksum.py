"""Cost of checkpoint records: :func:`museg_lit.checkpoint_record.digest` (SHA-256, read once per
save and once per resume) on a file of ``--gib`` GiB of random bytes, next to zlib's CRC-32 and
BLAKE2b over the same bytes, measured side by side in one run (medians of ``--repeats``).

    python experiments/bench_checksum.py            # or: make bench-checksum
    python experiments/bench_checksum.py --gib 0.25 --repeats 1   # quick look

The page cache is warmed first, so this is hashing speed, not disk speed (a cold read from a network
file system is usually the slower of the two). Results go to ``experiments/results/bench_checksum.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import tempfile
import time
import zlib
from pathlib import Path

from museg_lit.checkpoint_record import CHUNK, digest


def _stream(path: Path, update) -> None:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            update(chunk)


def _crc32(path: Path) -> None:
    state = [0]
    _stream(path, lambda b: state.__setitem__(0, zlib.crc32(b, state[0])))


def _blake2b(path: Path) -> None:
    _stream(path, hashlib.blake2b().update)


METHODS = {"sha256 (digest, ours)": digest, "crc32": _crc32, "blake2b": _blake2b}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_checksum.md"))
    args = parser.parse_args()
    size = int(args.gib * (1 << 30))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.bin"
        with open(path, "wb") as fh:
            for _ in range(0, size, CHUNK):
                fh.write(os.urandom(min(CHUNK, size - fh.tell())))
        _stream(path, lambda b: None)  # warm the page cache
        seconds: dict[str, list[float]] = {name: [] for name in METHODS}
        for _ in range(args.repeats):  # interleaved: machine load drifts hit every method alike
            for name, fn in METHODS.items():
                start = time.perf_counter()
                fn(path)
                seconds[name].append(time.perf_counter() - start)
    rows = [f"| {name} | {statistics.median(s):.3f} | {size / statistics.median(s) / 1e9:.2f} | "
            f"{100e9 / (size / statistics.median(s)):.0f} |" for name, s in seconds.items()]
    table = "\n".join([
        f"# Checkpoint checksum cost ({args.gib:g} GiB, median of {args.repeats}; {platform.processor() or platform.machine()},"
        f" {os.cpu_count()} cores)", "",
        f"Command: `python experiments/bench_checksum.py --gib {args.gib:g} --repeats {args.repeats}`", "",
        "| method | seconds | GB/s | seconds per 100 GB |", "| --- | --- | --- | --- |", *rows, ""])
    print(table)
    Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
