"""Learning-rate schedules (built as Hydra partials; the module passes ``total_steps``)."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def linear_warmup_decay(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, final_ratio: float = 0.0) -> LambdaLR:
    """Linear warm-up then linear decay to ``final_ratio * lr`` (HF Trainer's default ``linear``,
    which TRL 0.15 and hence MUSEG used). Example: total 10, warmup 0 -> factors 1.0, 0.9, ..., 0.1."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(final_ratio, 1.0 - progress * (1.0 - final_ratio))

    return LambdaLR(optimizer, factor)


def constant(optimizer: Optimizer, total_steps: int) -> LambdaLR:
    """Constant learning rate (``total_steps`` is accepted for a uniform call)."""
    return LambdaLR(optimizer, lambda step: 1.0)
