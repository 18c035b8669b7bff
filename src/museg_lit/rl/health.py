"""Training-health numbers of one step: is there a learning signal, and are the answers usable?

What a user looks at when a run goes flat (the reward stops moving):

* ``zero_variance_share``: groups whose G rewards are all equal have zero advantage everywhere and
  teach nothing (DAPO drops them; GRPO spends compute on them);
* ``answer_health``: completions with no parsable ``<answer>`` (format failures), and degenerate
  answers (no segment, or one segment covering most of the video: the trivially safe guess that
  IoU rewards can drift to);
* ``peak_memory_mb``: the step's peak device memory (CUDA), or the process's peak resident memory
  on CPU (a high-water mark since start: Linux cannot reset it).
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Sequence

import torch
from torch import Tensor

from museg_lit.rewards.parsing import parse_answer_segments

__all__ = ["answer_health", "peak_memory_mb", "zero_variance_share"]

DEGENERATE_COVER = 0.9  # one segment covering at least this share of the video is degenerate


def zero_variance_share(group_std: Tensor, tol: float = 1e-6) -> float:
    """Share of groups whose rewards do not vary. Example: std [0, 0.5, 1e-9, 2] -> 0.5."""
    if group_std.numel() == 0:
        return 0.0
    return float((group_std <= tol).float().mean())


def answer_health(texts: Sequence[str], durations: Sequence[float | None],
                  cover: float = DEGENERATE_COVER) -> dict[str, float]:
    """``format_failures`` and ``degenerate_answers`` shares over the completions ``texts``.

    A format failure has no single parsable ``<answer>`` of segments (MUSEG's parser,
    :func:`~museg_lit.rewards.parsing.parse_answer_segments`). A degenerate answer is a format
    failure, an answer with no segment, or exactly one segment whose length is at least ``cover``
    of its video's ``duration`` (not checked where the duration is unknown, ``None``).

    >>> answer_health(["<answer>0-9.5</answer>", "<answer>1-2</answer>", "<answer></answer>", "none"], [10] * 4)
    {'format_failures': 0.25, 'degenerate_answers': 0.75}
    """
    if len(texts) != len(durations):
        raise ValueError(f"{len(texts)} completions but {len(durations)} durations")
    if not texts:
        return {"format_failures": 0.0, "degenerate_answers": 0.0}
    failures = degenerate = 0
    for text, duration in zip(texts, durations, strict=True):
        segments = parse_answer_segments(text)
        failures += segments is None
        covers_video = len(segments or ()) == 1 and bool(duration) and segments[0][1] - segments[0][0] >= cover * duration
        degenerate += not segments or covers_video
    return {"format_failures": failures / len(texts), "degenerate_answers": degenerate / len(texts)}


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MiB: CUDA's allocator peak on ``device`` since the last
    ``torch.cuda.reset_peak_memory_stats`` (the module resets it each step), else the process's
    peak resident set size (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
