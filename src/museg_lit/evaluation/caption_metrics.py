"""BLEU-1..4, METEOR, ROUGE-L and CIDEr of E.T. Bench's captioning tasks (``dvc``, ``slc``), as its
``compute_metrics.py`` reports them next to F1 and SentSim. Optional: needs ``pycocoevalcap``
(``pip install '.[caption]'``); METEOR also needs Java on ``PATH`` and is left out without it.

The caption pairs are those of :func:`museg_lit.evaluation.etbench_metrics.dvc_scores` (each
predicted caption with each ground-truth caption it overlaps at tIoU >= t, else a random string),
already tokenized by :func:`~museg_lit.evaluation.etbench_metrics.ptb_tokenize` (the reference runs
pycocoevalcap's Java PTBTokenizer). Per video one ``compute_score`` call per metric, the mean over
videos per t, then (in ``dvc_scores``) the mean over t, as the reference does.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import numpy as np

__all__ = ["COCO_KEYS", "available", "coco_scorer"]

COCO_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")

Pairs = dict[str, list[tuple[str, str]]]  # video -> [(ground-truth caption, predicted caption)], tokenized


def available() -> bool:
    """True if pycocoevalcap imports."""
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        return False
    return True


def coco_scorer(meteor: bool | None = None) -> Callable[[Pairs], dict[str, float]]:
    """A function ``pairs_by_video -> {metric: mean over videos}`` (the keys of :data:`COCO_KEYS`;
    ``METEOR`` only with ``meteor``, default: when ``java`` is on PATH). Raises ImportError without
    pycocoevalcap."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    scorers: list[tuple[object, list[str] | str]] = [(Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"])]
    if meteor is None:
        meteor = shutil.which("java") is not None
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        scorers.append((Meteor(), "METEOR"))
    scorers += [(Rouge(), "ROUGE_L"), (Cider(), "CIDEr")]

    def score(pairs_by_video: Pairs) -> dict[str, float]:
        out: dict[str, float] = {}
        for scorer, names in scorers:
            per_video = []
            for pairs in pairs_by_video.values():
                gts = {i: [g] for i, (g, _) in enumerate(pairs)}
                res = {i: [p] for i, (_, p) in enumerate(pairs)}
                if isinstance(names, list):
                    value, _ = scorer.compute_score(gts, res, verbose=0)
                else:
                    value, _ = scorer.compute_score(gts, res)
                per_video.append(value)
            if isinstance(names, list):
                means = np.mean(per_video, axis=0) if per_video else [0.0] * len(names)  # [4]
                out.update({n: float(m) for n, m in zip(names, means, strict=True)})
            else:
                out[names] = float(np.mean(per_video)) if per_video else 0.0
        return out

    return score
