"""On-disk cache of decoded clips: decode a video once per (file, sampling settings), re-load it in milliseconds.

A clip is what :func:`museg_lit.data.video.load_video` returns for one video and one set of frame
settings. Its cache key hashes

    (resolved path, file size, mtime_ns, fps, min_frames, max_frames, min_pixels, max_pixels,
     total_pixels, DECODER_VERSION, PyAV version)

so editing or replacing the video, changing any sampling setting, or changing the decoder
invalidates the entry (a changed key is simply a miss; old entries are never read again).
``total_pixels=None`` is resolved to qwen-vl-utils' default budget *before* hashing, because that
default can be overridden by the environment variable ``VIDEO_MAX_PIXELS`` (``MODEL_SEQ_LEN`` for
``patch_size=16``); ``min_pixels`` / ``max_pixels`` ``None`` are resolved to the patch size's
defaults too. ``patch_size`` (14 or 16, see :mod:`museg_lit.data.video`) is hashed only when it is
not 14, so the keys of existing patch-14 entries are unchanged.

Storage: one file per clip, ``<cache_dir>/<key[:2]>/<key>.clip``::

    b"MUSEGCL1" | uint32 little-endian header length | header (UTF-8 JSON) | frames (uint8, C order)

The JSON header holds the key, the frame shape, a CRC-32 of the frame bytes and the clip's
timing fields. A writer writes a temporary file in the same directory and renames it into place
with ``os.replace`` (atomic on POSIX), so DataLoader workers and ranks that decode the same clip at
the same time each write a complete file and the last rename wins (both are identical); a reader
sees either no entry or a complete one. An entry that fails any check (magic, key, version, size,
CRC, JSON) is treated as a miss: the clip is decoded again and the entry replaced. Cache I/O
errors (read-only or full disk) are logged and never fail the load.

Departures / limits: there is no eviction (delete the directory to clear it; a MUSEG stage-1 clip
is ~15 MB); no ``fsync`` before the rename (a power cut can leave a truncated entry, which the
size and CRC checks turn into a miss); temporary files of a writer killed mid-write are left
behind as ``.*.tmp``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import av
import torch

from museg_lit.data.video import (
    FPS,
    FPS_MAX_FRAMES,
    FPS_MIN_FRAMES,
    VideoClip,
    load_video,
    pixel_defaults,
)

log = logging.getLogger(__name__)

# Bump whenever load_video can return different frames, indices or timing for the same file and
# settings (a parity fix, a new colour conversion ...): old entries then stop matching any key.
DECODER_VERSION = "1"
MAGIC = b"MUSEGCL1"
_HEADER_LEN = struct.Struct("<I")
_SUFFIX = ".clip"


class _CorruptEntry(Exception):
    """An entry that exists but cannot be trusted; the caller treats it as a miss."""


@dataclass
class CacheStats:
    """Per-process counters (each DataLoader worker has its own)."""

    hits: int = 0
    misses: int = 0
    corrupt: int = 0  # entries found but rejected (counted in `misses` too)
    write_errors: int = 0


def cache_key(
    path: str | os.PathLike[str],
    *,
    fps: float = FPS,
    min_frames: int = FPS_MIN_FRAMES,
    max_frames: int = FPS_MAX_FRAMES,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    total_pixels: float | None = None,
    patch_size: int = 14,
) -> str:
    """Hex SHA-256 of the file's identity and the sampling settings (see the module docstring).

    Raises ``OSError`` if the file cannot be stat'ed. Numbers are hashed as floats so that
    ``fps=2`` and ``fps=2.0`` share an entry.
    """
    resolved = Path(path).resolve()
    st = resolved.stat()
    default_min, default_max, default_total = pixel_defaults(patch_size)  # ValueError unless 14 / 16
    min_pixels = default_min if min_pixels is None else min_pixels
    max_pixels = default_max if max_pixels is None else max_pixels
    budget = default_total if total_pixels is None else total_pixels
    fields_ = {
        "path": str(resolved),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "fps": float(fps),
        "min_frames": float(min_frames),
        "max_frames": float(max_frames),
        "min_pixels": float(min_pixels),
        "max_pixels": float(max_pixels),
        "total_pixels": float(budget),
        "decoder": DECODER_VERSION,
        "pyav": av.__version__,  # FFmpeg's colour conversion may change between releases
    }
    if patch_size != 14:  # patch-14 keys stay those written before patch_size existed
        fields_["patch_size"] = patch_size
    return hashlib.sha256(json.dumps(fields_, sort_keys=True).encode()).hexdigest()


class ClipCache:
    """A directory of decoded clips, safe to share between processes and ranks."""

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.root = Path(cache_dir)
        self.stats = CacheStats()

    def entry_path(self, key: str) -> Path:
        # Two hex characters of fan-out keep directories small for datasets of 100k clips.
        return self.root / key[:2] / f"{key}{_SUFFIX}"

    def get(self, key: str, path: str | os.PathLike[str]) -> VideoClip | None:
        """The cached clip for ``key`` (its ``path`` set to ``path``), or None on a miss."""
        entry = self.entry_path(key)
        try:
            with open(entry, "rb") as f:
                clip = self._read(f, key, os.fspath(path))
        except FileNotFoundError:
            self.stats.misses += 1
            return None
        except (_CorruptEntry, OSError, ValueError, KeyError, TypeError, struct.error) as e:
            # ValueError covers bad JSON and bad UTF-8; OSError a disk that went away.
            self.stats.misses += 1
            self.stats.corrupt += 1
            log.warning("clip cache: ignoring unreadable entry %s (%s); decoding again", entry, e)
            return None
        self.stats.hits += 1
        return clip

    @staticmethod
    def _read(f, key: str, path: str) -> VideoClip:
        if f.read(len(MAGIC)) != MAGIC:
            raise _CorruptEntry("bad magic")
        (header_len,) = _HEADER_LEN.unpack(f.read(_HEADER_LEN.size))
        header_bytes = f.read(header_len)
        if len(header_bytes) != header_len:
            raise _CorruptEntry("truncated header")
        header = json.loads(header_bytes.decode("utf-8"))
        if header["key"] != key or header["decoder"] != DECODER_VERSION:
            raise _CorruptEntry("key mismatch")  # a hash collision or a foreign file
        shape = [int(n) for n in header["shape"]]
        if len(shape) != 4 or shape[1] != 3 or min(shape) < 1:
            raise _CorruptEntry(f"bad shape {shape}")
        frames = torch.empty(shape, dtype=torch.uint8)  # [T, 3, H, W]
        buffer = frames.numpy()  # shares memory with `frames`: readinto fills the tensor in place
        expected = buffer.nbytes
        payload_start = len(MAGIC) + _HEADER_LEN.size + header_len
        if os.fstat(f.fileno()).st_size != payload_start + expected:
            raise _CorruptEntry("file size does not match the frame shape (truncated or padded)")
        if f.readinto(buffer) != expected:
            raise _CorruptEntry("short read")
        if zlib.crc32(buffer) != header["crc32"]:
            raise _CorruptEntry("CRC mismatch")
        indices = [int(i) for i in header["frame_indices"]]
        if len(indices) != shape[0] or len(header["timestamps"]) != shape[0]:
            raise _CorruptEntry("timing fields do not match the frame count")
        return VideoClip(
            frames=frames,
            sample_fps=float(header["sample_fps"]),
            timestamps=[float(t) for t in header["timestamps"]],
            duration=float(header["duration"]),
            frame_indices=indices,
            video_fps=float(header["video_fps"]),
            total_frames=int(header["total_frames"]),
            path=path,
        )

    def put(self, key: str, clip: VideoClip) -> Path | None:
        """Write ``clip`` atomically; returns the entry path, or None if writing failed (logged)."""
        entry = self.entry_path(key)
        frames = clip.frames.detach().to("cpu", torch.uint8).contiguous()  # [T, 3, H, W]
        buffer = frames.numpy()
        header = json.dumps(
            {
                "key": key,
                "decoder": DECODER_VERSION,
                "shape": list(frames.shape),
                "crc32": zlib.crc32(buffer),
                "sample_fps": clip.sample_fps,
                "timestamps": list(clip.timestamps),
                "duration": clip.duration,
                "frame_indices": list(clip.frame_indices),
                "video_fps": clip.video_fps,
                "total_frames": clip.total_frames,
                "source": clip.path,  # informational only: a hit reports the caller's path
            }
        ).encode("utf-8")
        tmp: str | None = None
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            # Same directory as the entry, so os.replace is a rename within one filesystem.
            fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=f".{entry.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC)
                f.write(_HEADER_LEN.pack(len(header)))
                f.write(header)
                f.write(memoryview(buffer).cast("B"))
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; other users and ranks may share the cache
            os.replace(tmp, entry)
            tmp = None
        except OSError as e:
            self.stats.write_errors += 1
            log.warning("clip cache: cannot write %s (%s); continuing without caching it", entry, e)
            return None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        return entry


_CACHES: dict[str, ClipCache] = {}


def get_cache(cache_dir: str | os.PathLike[str]) -> ClipCache:
    """One :class:`ClipCache` per directory and process (so its stats accumulate)."""
    key = os.fspath(cache_dir)
    if key not in _CACHES:
        _CACHES[key] = ClipCache(key)
    return _CACHES[key]


def load_video_cached(
    path: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None,
    fps: float = FPS,
    min_frames: int = FPS_MIN_FRAMES,
    max_frames: int = FPS_MAX_FRAMES,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    total_pixels: float | None = None,
    timeout_s: float | None = None,
    patch_size: int = 14,
) -> VideoClip:
    """:func:`~museg_lit.data.video.load_video` through the cache in ``cache_dir`` (None: no cache).

    Returns the same clip ``load_video`` returns; raises the same ``VideoDecodeError``s (failed
    decodes are not cached, so a repaired file is picked up on the next call).
    """
    settings = dict(
        fps=fps, min_frames=min_frames, max_frames=max_frames,
        min_pixels=min_pixels, max_pixels=max_pixels, total_pixels=total_pixels, patch_size=patch_size,
    )  # fmt: skip
    if cache_dir is None:
        return load_video(path, timeout_s=timeout_s, **settings)
    try:
        key = cache_key(path, **settings)
    except OSError:
        # Missing or unreadable file: let load_video raise its VideoDecodeError naming it.
        return load_video(path, timeout_s=timeout_s, **settings)
    cache = get_cache(cache_dir)
    clip = cache.get(key, path)
    if clip is not None:
        return clip
    clip = load_video(path, timeout_s=timeout_s, **settings)
    try:
        unchanged = cache_key(path, **settings) == key
    except OSError:
        unchanged = False
    if unchanged:  # a file rewritten while it was decoded must not be cached under its old key
        cache.put(key, clip)
    return clip
