"""Group filters applied between scoring and the loss.

* DAPO dynamic sampling (Yu et al. 2025): a group whose G rewards are all equal has zero advantage
  everywhere and only dilutes the batch; drop it (the module then refills the batch with new
  prompts, up to a bounded number of extra rollouts).
* DAPO overlong filtering: completions cut at ``max_new_tokens`` are masked out of the loss.
"""

from __future__ import annotations

from torch import Tensor


def informative_groups(group_std: Tensor, tol: float = 1e-6) -> Tensor:
    """Bool ``[B]``: groups whose rewards differ. Example: std [0, 0.5, 1e-9] -> [False, True, False]."""
    return group_std > tol


def rows_of_groups(keep_groups: Tensor, num_generations: int) -> Tensor:
    """Expand a group mask ``[B]`` to a row mask ``[B*G]`` (prompt-major layout)."""
    return keep_groups.repeat_interleave(num_generations)  # [B*G]


def mask_truncated(completion_mask: Tensor, truncated: Tensor) -> Tensor:
    """Zero the mask of truncated rows: ``[N, C]``, ``[N]`` -> ``[N, C]``."""
    return completion_mask * (~truncated).unsqueeze(1).to(completion_mask.dtype)
