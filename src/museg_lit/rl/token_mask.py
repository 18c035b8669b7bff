"""Timestamp-token masks for LongVTG-R1's token-aware KL.

LongVTG-R1 (ICLR 2026 submission; no public code, this is a reconstruction) removes the KL pull on
the tokens that carry timestamps, so the policy may move its predicted times freely while the rest
of the text stays close to the reference: ``beta_t = beta_time`` on timestamp tokens (paper: 0) and
``beta`` elsewhere.

Which tokens are "timestamp tokens" is decided from token ids and character offsets of the decoded
completion (not from re-tokenised text, which can split differently):

* ``scope="answer"``: tokens made only of digits and ``.`` inside ``<answer>...</answer>``;
* ``scope="all_digits"``: every token made only of digits and ``.`` that holds a digit, anywhere
  (also the timestamps cited in the reasoning).

Qwen2's pre-tokenizer splits digits one per token, so ``12.50`` is five tokens; for tokenizers that
merge digits the rule still works token by token.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

SCOPES = ("answer", "all_digits")
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NUMERIC = re.compile(r"^[0-9.]+$")


def token_pieces(tokenizer, ids: list[int]) -> list[str]:
    """The text each token contributes (byte-level tokens decoded one by one).

    Ids past the tokenizer's vocabulary (the embedding matrix is padded, e.g. 151,936 rows for
    151,665 tokens in Qwen2.5) decode to "" rather than failing.
    """
    return [tokenizer.convert_tokens_to_string([t]) if t is not None else "" for t in tokenizer.convert_ids_to_tokens(ids)]


def timestamp_mask_from_pieces(pieces: list[str], scope: str = "answer") -> list[bool]:
    """Per-token flags from the decoded pieces of one completion.

    Example: pieces ``["<", "answer", ">", "1", ".", "5", "-", "2", "</", "answer", ">"]`` with
    scope ``answer`` -> True for "1", ".", "5", "2" only.
    """
    if scope not in SCOPES:
        raise ValueError(f"algo.token_kl_scope must be one of {SCOPES}, got {scope!r}")
    numeric = [bool(_NUMERIC.match(p.strip())) and p.strip() != "" for p in pieces]
    if scope == "all_digits":
        return [n and any(ch.isdigit() for ch in p) for n, p in zip(numeric, pieces, strict=True)]
    text = "".join(pieces)
    spans = [m.span(1) for m in _ANSWER.finditer(text)]
    flags, pos = [], 0
    for piece, is_num in zip(pieces, numeric, strict=True):
        start, end = pos, pos + len(piece)
        pos = end
        flags.append(is_num and any(s <= start and end <= e for s, e in spans))
    return flags


def timestamp_token_mask(completion_ids: Tensor, completion_mask: Tensor, tokenizer, scope: str = "answer") -> Tensor:
    """Bool mask ``[N, C]`` of timestamp tokens among the valid completion tokens."""
    out = torch.zeros_like(completion_ids, dtype=torch.bool)  # [N, C]
    lengths = completion_mask.sum(dim=1).tolist()  # [N]
    for row, length in enumerate(lengths):
        ids = completion_ids[row, : int(length)].tolist()
        flags = timestamp_mask_from_pieces(token_pieces(tokenizer, ids), scope)
        out[row, : len(flags)] = torch.tensor(flags, dtype=torch.bool)
    return out


def per_token_beta(timestamp_mask: Tensor, beta: float, beta_time: float) -> Tensor:
    """``beta_time`` where the mask is set, ``beta`` elsewhere: ``[N, C]`` float."""
    return torch.where(timestamp_mask, torch.tensor(beta_time), torch.tensor(beta)).float()  # [N, C]


def kl_weights(completion_ids: Tensor, completion_mask: Tensor, tokenizer, *, beta: float,
               beta_time: float | None = None, scope: str = "answer") -> Tensor:
    """The per-token KL weight ``[N, C]`` (float, on the completions' device): ``beta`` on every token,
    or with ``beta_time`` set LongVTG-R1's token-aware weights (``beta_time`` on the timestamp tokens
    of ``scope``). One representation whatever the algorithm, so rows can be selected and batches
    concatenated alike."""
    if beta_time is None:
        return torch.full(completion_ids.shape, float(beta), dtype=torch.float32, device=completion_ids.device)
    timestamps = timestamp_token_mask(completion_ids, completion_mask, tokenizer, scope)  # [N, C]
    return per_token_beta(timestamps, beta, beta_time).to(completion_ids.device)  # [N, C]
