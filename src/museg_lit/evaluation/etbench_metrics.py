"""E.T. Bench scoring for all 12 tasks, as E.T. Bench's ``compute_metrics.py`` (the copy in MUSEG's
release, ``data/eval/et_bench/compute_metrics.py``) computes it: :func:`etbench_metrics`.

Re-implemented here (no code of the reference is used); each task has a small pure function that
returns the reference's ``metrics.json`` entry of one (task, source) group, with its keys:

* referring ``rar`` / ``eca`` / ``rvq`` (:func:`option_scores`): ``Total``, ``Failed``, ``Acc``;
  the option letter is read from ``(X)``, from a leading ``X``/``X.``/``X)``..., else the option
  most similar to the answer by sentence similarity wins (and the sample counts as failed unless
  a letter was seen);
* grounding ``tvg`` / ``epm`` (:func:`tvg_scores`), ``tal`` (:func:`tal_scores`), ``evs``
  (:func:`evs_scores`), ``vhd`` (:func:`vhd_scores`): ``F1@0.1``..``F1@0.7``, ``F1``;
* captioning ``dvc`` / ``slc`` (:func:`dvc_scores`): detection ``F1@t`` (precision / recall at
  tIoU > t, scaled by the share of samples that produced captions), ``F1`` and ``SentSim`` (mean
  similarity of each predicted caption with the ground-truth caption(s) it overlaps at tIoU >= t,
  else with a random string);
* complex ``tem`` (:func:`tem_scores`: ``R@t``, ``mRec``) and ``gvq`` (:func:`gvq_scores`: the
  option is chosen as above, then ``R@t`` / ``mRec`` over the correctly answered samples, ``Acc``).

Sentence similarity is the dot product of ``sentsim.encode([text])`` embeddings (the reference:
all-MiniLM-L6-v2, which returns unit vectors, so the dot is the cosine), encoded one text at a
time for the options and per video batch for captions, exactly where the reference does.

Departures from the reference (all documented where they happen):

* A number the reference's ``float`` cannot read (``1..5``) makes the answer *failed* instead of
  crashing the script; NaN IoUs (zero-length segments) count 0.
* Captions are tokenized by :func:`ptb_tokenize`, a Python re-implementation of what
  pycocoevalcap's Stanford PTBTokenizer (Java) plus its punctuation filter output for ordinary
  English captions (lower case; punctuation, quotes and clitics ``'s n't 're``... split off,
  brackets as ``-lrb-``...). Exotic text may tokenize differently.
* A predicted caption that overlaps no ground truth is compared with a random 10-20 letter string
  in both; the reference draws it from the unseeded global ``random``, here from
  ``random.Random(seed)`` (reproducible). Its similarity is close to 0 either way.
* BLEU / METEOR / ROUGE-L / CIDEr of the captioning tasks only with ``caption_metrics=True``
  (optional extra pycocoevalcap, :mod:`museg_lit.evaluation.caption_metrics`; METEOR needs Java).
* The reference prints the Overall / Merged tables only when all four groups are present (it
  crashes otherwise); here a missing task leaves its columns ``None``.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Iterable

import numpy as np

from museg_lit.evaluation.metrics import THRESHOLDS, _temporal_iou

__all__ = [
    "ALL_TASKS",
    "MERGED_COLUMNS",
    "OVERALL_COLUMNS",
    "SENTSIM_TASKS",
    "TASK_GROUPS",
    "SentSimRequired",
    "dvc_format",
    "dvc_scores",
    "etbench_metrics",
    "evs_scores",
    "gvq_scores",
    "option_scores",
    "parse_timestamps",
    "ptb_tokenize",
    "tal_scores",
    "tem_scores",
    "tvg_scores",
    "vhd_scores",
]

# task groups in the reference's table order (Overall row: REF, GND, CAP (F1, Sim), COM)
TASK_GROUPS: dict[str, tuple[str, ...]] = {
    "ref": ("rar", "eca", "rvq"),
    "gnd": ("tvg", "epm", "tal", "evs", "vhd"),
    "cap": ("dvc", "slc"),
    "com": ("tem", "gvq"),
}
ALL_TASKS: tuple[str, ...] = tuple(t for group in TASK_GROUPS.values() for t in group)
SENTSIM_TASKS: tuple[str, ...] = ("rar", "eca", "rvq", "dvc", "slc", "gvq")
# (column of the reference's Overall row, task, key of the per-source dict averaged over sources)
OVERALL_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("RAR (Acc)", "rar", "Acc"), ("EVC (Acc)", "eca", "Acc"), ("RVQ (Acc)", "rvq", "Acc"),
    ("TVG (F1)", "tvg", "F1"), ("EPM (F1)", "epm", "F1"), ("TAL (F1)", "tal", "F1"),
    ("EVS (F1)", "evs", "F1"), ("VHD (F1)", "vhd", "F1"),
    ("DVC (F1)", "dvc", "F1"), ("DVC (Sim)", "dvc", "SentSim"),
    ("SLC (F1)", "slc", "F1"), ("SLC (Sim)", "slc", "SentSim"),
    ("TEM (Rec)", "tem", "mRec"), ("GVQ (Rec)", "gvq", "mRec"),
)
# (column of the Merged row, the Overall columns it averages)
MERGED_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Acc (ref)", ("RAR (Acc)", "EVC (Acc)", "RVQ (Acc)")),
    ("F1 (gnd)", ("TVG (F1)", "EPM (F1)", "TAL (F1)", "EVS (F1)", "VHD (F1)")),
    ("F1 (cap)", ("DVC (F1)", "SLC (F1)")),
    ("Sim (cap)", ("DVC (Sim)", "SLC (Sim)")),
    ("Rec (com)", ("TEM (Rec)", "GVQ (Rec)")),
)
# MUSEG's E.T. Bench "AVG": the mean of its REF, GND, CAP and COM columns (CAP = F1 (cap))
AVG_COLUMNS: tuple[str, ...] = ("Acc (ref)", "F1 (gnd)", "F1 (cap)", "Rec (com)")


class SentSimRequired(ValueError):
    """A task that needs the sentence-similarity model was scored without one."""


Similarity = Callable[[str, str], float]


# ------------------------------------------------------------------------------------------------
# Answer parsing: timestamps (E.T. Bench's `tvg_format`) and dense captions (`dvc_format`).
# ------------------------------------------------------------------------------------------------

_RANGE = re.compile(r"(\d+\.*\d*)\s*-\s*(\d+\.*\d*)")
_RANGE_STRING = re.compile(r"(\d+\.*\d*\s*-\s*\d+\.*\d*)")
_TO = re.compile(r"(\d+\.*\d*)\s* to \s*(\d+\.*\d*)")
_PLAIN_NUMBER = re.compile(r"\b(\d+\.\d+\b|\b\d+)\b")
_FIRST_NUMBER = re.compile(r"[-+]?\d*\.\d+|[-+]?\d+")
_KEYWORDS = ("starts", "ends", "happens in", "start time", "end time", "start", "end", "happen")


def parse_timestamps(answer: str) -> list[list[float]] | None:
    """Segments in an E.T. Bench answer, each ordered ``[min, max]``; None if there are none.

    Tries, in order: ``a - b`` ranges anywhere; ``a to b``; then the first plain number of every
    sentence that mentions a start/end keyword, paired up. (The reference's last fallback, clock
    times in keyword sentences, is unreachable: such a sentence always yields a plain number
    first, and fewer than two of them leave nothing to pair.)

    >>> parse_timestamps("The event happens in 2.5 - 4.8 seconds and again 9-7.")
    [[2.5, 4.8], [7.0, 9.0]]
    >>> parse_timestamps("It starts at 3 s.\\nIt ends at 6 s."), parse_timestamps("no idea")
    ([[3.0, 6.0]], None)
    """
    ans = answer.lower()
    try:
        pairs = [(float(a), float(b)) for a, b in _RANGE.findall(ans)]
        if not pairs:
            pairs = [(float(a), float(b)) for a, b in _TO.findall(ans)]
        if not pairs:
            sentences = [s for s in re.split(r"[!?\n]", ans) if any(k in s for k in _KEYWORDS)]
            times = [float(found[0]) for s in sentences if (found := _PLAIN_NUMBER.findall(s))]
            times = times[: len(times) // 2 * 2]
            pairs = list(zip(times[0::2], times[1::2], strict=True))
    except ValueError:  # "1..5": the reference crashes; we count the sample as failed
        return None
    return [[s, e] if e > s else [e, s] for s, e in pairs] or None


_START_TIME = re.compile(r"(?:start(?:ing)? time: (\d+\.*\d*)(?:s| seconds)?)", re.DOTALL | re.IGNORECASE)
_END_TIME = re.compile(r"(?:end(?:ing)? time: (\d+\.*\d*)(?:s| seconds)?)", re.DOTALL | re.IGNORECASE)
_START_END = re.compile(r"start time (\d+\.*\d*), end time (\d+\.*\d*)")
_CLOCK = re.compile(r"\d+\.*\d*:\d+\.*\d*")
_NUMBER_NO_DOT_AFTER = re.compile(r"\d+\.*\d*(?!\.)")


class _Unparsable(Exception):
    """Where the reference raises inside ``dvc_format``'s ``try`` (the answer counts as failed)."""


def _paragraph_events(paragraph: str) -> tuple[list[list[float]], list[str]]:
    """Timestamped captions of a paragraph: ``a - b`` ranges splitting the text, else
    ``start time: a`` / ``end time: b`` lines with ``description: ...`` (or ``* ...``) captions.
    Raises :class:`_Unparsable` where the reference's parser raises."""
    paragraph = paragraph.lower()
    timestamps: list = []
    captions: list[str] = []
    pairs = _RANGE.findall(paragraph)
    if pairs:
        try:
            timestamps = [[float(a), float(b)] for a, b in pairs]
        except ValueError:
            raise _Unparsable from None
        rest = paragraph
        for text in _RANGE_STRING.findall(paragraph):  # each range becomes a line break
            rest = rest.replace(text, "\n")
        captions = rest.replace("seconds", "").split("\n")
    if not timestamps:
        starts, ends = _START_TIME.findall(paragraph), _END_TIME.findall(paragraph)
        if starts and ends:
            try:
                timestamps = [[float(a), float(b)] for a, b in zip(starts, ends, strict=False)]
            except ValueError:
                raise _Unparsable from None
            captions = re.findall(r"description: (.*)", paragraph) or re.findall(r"\*\s*(.*)", paragraph)
    if not timestamps and _START_END.findall(paragraph):
        raise _Unparsable  # the reference asserts this form away: the whole answer fails
    captions = [c.strip().strip(", ").rstrip() for c in captions if len(c) > 5]
    n = min(len(timestamps), len(captions))
    return timestamps[:n], captions[:n]


def _line_time(text: str) -> str | None:
    """The ``a - b`` of one caption line (the reference's ``extract_time_part``): its first ``a - b``
    range, else ``m:ss`` -> a 40 s window around it, ``m:ss ... m:ss`` -> that span, one number -> a 40 s window,
    two numbers -> their span; None if nothing. Raises :class:`_Unparsable` where the reference raises."""
    radius = 20
    # a range can be here: a whole answer whose ranges left no caption text falls back to lines
    found: list[str] = _RANGE_STRING.findall(text)
    try:
        if found:
            pass
        elif text.count(":") == 1:
            clock = _CLOCK.findall(text)[0]
            t = int(clock.split(":")[0]) * 60 + int(clock.split(":")[1])
            found = [f"{t - radius} - {t + radius}" if t > radius else f"{t} - {t + 2 * radius}"]
        elif text.count(":") == 2:
            start, end = _CLOCK.findall(text)
            s = int(start.split(":")[0]) * 60 + int(start.split(":")[1])
            e = int(end.split(":")[0]) * 60 + int(end.split(":")[1])
            found = [f"{s} - {e}"]
        if not found:
            found = _NUMBER_NO_DOT_AFTER.findall(text)
            if len(found) == 1:
                t = float(found[0])
                found = [f"{t - radius} - {t + radius}" if t > radius else f"{t} - {t + 2 * radius}"]
            elif len(found) == 2:
                found = [f"{found[0]} - {found[1]}"]
    except (IndexError, ValueError):
        raise _Unparsable from None
    return found[0] if found else None


def dvc_format(answer: str) -> tuple[list[list[float]] | None, list[str] | None]:
    """Timestamps ``[[s, e], ...]`` (ordered) and captions of a dense-captioning answer, or ``(None, None)``.

    First the whole answer (:func:`_paragraph_events`); if that finds no range, the first line
    (split on newlines, else on ``.``) longer than 7 characters whose text before ``seconds``
    holds a time (:func:`_line_time`) gives one event, its caption the text after the last
    ``seconds``, times rounded to 2 decimals.

    >>> dvc_format("0 - 5 seconds, a man talks.\\n5.5 - 9 seconds, he cuts an onion.")
    ([[0.0, 5.0], [5.5, 9.0]], ['a man talks.', 'he cuts an onion.'])
    >>> dvc_format("At 30 seconds the man sits down."), dvc_format("nothing to see")
    (([[10.0, 50.0]], ['the man sits down.']), (None, None))
    """
    try:
        timestamps, captions = _paragraph_events(answer)
    except _Unparsable:
        return None, None
    if not timestamps:
        if "\n" in answer:
            lines = [c for c in answer.split("\n") if len(c) > 7]
        else:
            lines = [c + "." for c in answer.split(".") if len(c) > 7]
        for line in lines:
            parts = [p.strip(",") for p in line.split("seconds")]
            try:
                span = _line_time(parts[0])
                if span is None:
                    continue
                s, e = span.split("-")[0].strip(), span.split("-")[1].strip()
                timestamps.append([round(float(s), 2), round(float(e), 2)])
            except (_Unparsable, IndexError, ValueError):
                continue
            captions.append(parts[-1].strip())
            break  # the reference keeps the first line that parses
    if not timestamps:
        return None, None
    return [[min(t), max(t)] for t in timestamps], captions


def _segments(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return a.reshape(-1, 2)  # [K, 2]; a flat [s, e] becomes one row


def _iou(gt, pred) -> np.ndarray:
    """IoU matrix ``[G, P]`` in float32 with nncore's operation order."""
    g, p = _segments(gt), _segments(pred)
    gi, pi = np.meshgrid(np.arange(len(g)), np.arange(len(p)), indexing="ij")
    return _temporal_iou(g[gi, 0], g[gi, 1], p[pi, 0], p[pi, 1])  # [G, P]


# ------------------------------------------------------------------------------------------------
# Grounding and TEM (records: `a` answer, `tgt` ground truth).
# ------------------------------------------------------------------------------------------------


def _recall_block(ious: list[float], n: int, key: str, mean_key: str, miou: bool = True) -> dict:
    recall = [sum(i >= t for i in ious) / n for t in THRESHOLDS]
    out = {"mIoU": round(sum(ious) / n, 5)} if miou else {}
    out.update({f"{key}@{t}": round(r, 5) for t, r in zip(THRESHOLDS, recall, strict=True)})
    out[mean_key] = round(sum(recall) / len(recall), 5)
    return out


def tvg_scores(samples: list[dict]) -> dict:
    """``tvg`` / ``epm``: IoU of the first predicted segment with the ground truth; ``F1@t`` = share of
    samples with IoU >= t (failed answers count 0), ``F1`` = their mean.

    Example: gt 0-10, answers "2 - 7" (IoU 0.5), "0 - 10" (1.0), "?" (failed) -> mIoU 0.5,
    F1@0.5 = 2/3, F1@0.7 = 1/3.
    """
    ious, failed = _first_segment_ious(samples, best_of_gt=False)
    return {"Total": len(samples), "Failed": failed, **_recall_block(ious, len(samples), "F1", "F1")}


def tem_scores(samples: list[dict]) -> dict:
    """``tem``: as :func:`tvg_scores` with the best IoU over the ground-truth segments; ``R@t``, ``mRec``."""
    ious, failed = _first_segment_ious(samples, best_of_gt=True)
    return {"Total": len(samples), "Failed": failed, **_recall_block(ious, len(samples), "R", "mRec")}


def _first_segment_ious(samples: list[dict], *, best_of_gt: bool) -> tuple[list[float], int]:
    """IoU of each parsable answer's first segment with the first ground truth (or the best of them),
    and the number of answers with no parsable segment."""
    ious, failed = [], 0
    for s in samples:
        pred = parse_timestamps(s["a"])
        if pred is None:
            failed += 1
            continue
        m = _iou(s["tgt"], pred[0])  # [G, 1]
        ious.append(float(m.max() if best_of_gt else m[0, 0]))
    return ious, failed


def tal_scores(samples: list[dict]) -> dict:
    """``tal``: per sample and threshold t, 0 if no IoU reaches t, else F1 of (share of ground truths
    whose best IoU >= t, share of predictions whose best IoU >= t); averaged over all samples."""
    f1, failed = [0.0] * len(THRESHOLDS), 0
    for s in samples:
        pred = parse_timestamps(s["a"])
        if pred is None:
            failed += 1
            continue
        m = _iou(s["tgt"], pred)  # [G, P] float32
        for k, t in enumerate(THRESHOLDS):
            t32 = np.float32(t)  # the reference compares float32 tensors with the threshold
            if m.max() < t32:
                continue
            rec = float(np.float32((m.max(axis=1) >= t32).mean()))
            prc = float(np.float32((m.max(axis=0) >= t32).mean()))
            f1[k] += 2 * prc * rec / (prc + rec)
    n = len(samples)
    out = {"Total": n, "Failed": failed}
    out.update({f"F1@{t}": round(v / n, 5) for t, v in zip(THRESHOLDS, f1, strict=True)})
    out["F1"] = round(sum(v / n for v in f1) / len(f1), 5)
    return out


def evs_scores(samples: list[dict]) -> dict:
    """``evs``: per-second F1 on a 1,000-cell grid (segments rounded half-to-even, overlapping
    predictions count once), averaged over the samples that produced a prediction (reference quirk)."""
    scores, failed = [], 0
    for s in samples:
        pred = parse_timestamps(s["a"])
        if pred is None:
            failed += 1
            continue
        gt_map, pred_map = np.zeros(1000, dtype=np.int64), np.zeros(1000, dtype=np.int64)  # [1000] each
        for a, b in _segments(s["tgt"]).tolist():
            gt_map[max(0, round(a)):round(b)] = 1
        for a, b in pred:
            pred_map[max(0, round(a)):round(b)] = 2
        grid = gt_map + pred_map  # [1000]: 3 tp, 2 fp, 1 fn
        tp, fp, fn = (int((grid == v).sum()) for v in (3, 2, 1))
        if tp == 0:
            scores.append(0.0)
        else:
            rec, prc = tp / (tp + fn), tp / (tp + fp)
            scores.append(2 * prc * rec / (prc + rec))
    f1 = round(sum(scores) / len(scores), 5) if scores else 0
    return {"Total": len(samples), "Failed": failed, "F1": f1}


def vhd_scores(samples: list[dict]) -> dict:
    """``vhd``: hit if the first number of the answer lies in a ground-truth segment of any annotator."""
    hit, failed = 0, 0
    for s in samples:
        m = _FIRST_NUMBER.search(s["a"])
        if not m:
            failed += 1
            continue
        x, gt = float(m.group(0)), s["tgt"]
        annotators = gt if isinstance(gt[0][0], (list, tuple)) else [gt]
        hit += any(a <= x <= b for ann in annotators for a, b in ann)
    return {"Total": len(samples), "Failed": failed, "F1": round(hit / len(samples), 5)}


# ------------------------------------------------------------------------------------------------
# Options (rar, eca, rvq, gvq).
# ------------------------------------------------------------------------------------------------

_LETTERS = "ABCDE"


def _letter_map(options: list) -> str:
    if len(options) not in (4, 5):  # the reference raises NotImplementedError too
        raise ValueError(f"E.T. Bench option tasks have 4 or 5 options, got {len(options)}")
    return "abcde"[: len(options)]


def _most_similar_option(answer: str, options: list, sim: Similarity) -> tuple[int, float]:
    """Index of the option ``"(A) text"`` (a ``[s, e]`` option reads ``"s - e"``) most similar to
    ``answer``, the first one on ties, and its similarity."""
    best, best_score = 0, float("-inf")
    for idx, option in enumerate(options):
        text = f"{option[0]} - {option[1]}" if isinstance(option, (list, tuple)) else option
        score = sim(answer, f"({_LETTERS[idx]}) {text}")
        if score > best_score:
            best, best_score = idx, score
    return best, best_score


def option_scores(samples: list[dict], sim: Similarity) -> dict:
    """``rar`` / ``eca`` / ``rvq`` accuracy. Per answer, in order: a ``(X)`` anywhere that is the
    correct letter -> hit; then (lower-cased, ``best option:`` and a leading ``(`` removed) an empty
    answer -> failed; a leading letter alone or followed by ``.``, ``,``, space or ``)`` -> hit if
    correct; else the most similar option (:func:`_most_similar_option`), failed unless a letter was
    seen. The letters come from the group's *first* sample (4 or 5 options), as in the reference.

    Example (options 4, correct C): "(C) a dog" hit; "c. a dog" hit; "" failed; "the dog" -> the
    option most similar to "the dog" decides, failed += 1.
    """
    letters = _letter_map(samples[0]["o"])
    hit, failed = 0, 0
    for s in samples:
        gt, pred = s["p"], s["a"]
        seen_letter = False
        m = re.search(r"\(([A-Za-z])\)", pred)
        if m:
            seen_letter = True
            c = m.group(1).lower()
            if c in letters and gt == letters.index(c):
                hit += 1
                continue
        pred = pred.lower()
        if pred.startswith("best option:"):
            pred = pred[12:]
        pred = pred.lstrip().lstrip("(").lstrip()
        if not pred:
            failed += 1
            continue
        if len(pred) == 1 or pred[1] in (".", ",", " ", ")"):
            seen_letter = True
            if pred[0] in letters and gt == letters.index(pred[0]):
                hit += 1
                continue
        best, _ = _most_similar_option(pred, s["o"], sim)
        if not seen_letter:
            failed += 1
        hit += gt == best
    return {"Total": len(samples), "Failed": failed, "Acc": round(hit / len(samples), 5)}


def gvq_scores(samples: list[dict], sim: Similarity) -> dict:
    """``gvq``: the option as in :func:`option_scores` but without the ``(X)`` search nor lower-casing
    (an empty answer fails; a leading known letter decides; else the most similar option); then for
    the correctly answered samples the IoU of the answer's first segment with ``tgt``: ``R@t`` =
    share of *all* samples with IoU >= t, ``mRec`` their mean, ``Acc`` = share answered correctly.
    ``Failed`` = empty answers + correct answers without a segment.
    """
    correct, failed = [], 0
    for s in samples:
        gt, pred = s["p"], s["a"]
        if pred.lower().startswith("best option:"):
            pred = pred[12:]
        pred = pred.lstrip().lstrip("(").lstrip()
        if not pred:
            failed += 1
            continue
        letters = _letter_map(s["o"])
        if (len(pred) == 1 or pred[1] in (".", ",", " ", ")")) and pred[0].lower() in letters:
            if gt == letters.index(pred[0].lower()):
                correct.append(s)
            continue
        best, _ = _most_similar_option(pred, s["o"], sim)
        if gt == best:
            correct.append(s)
    ious = []
    for s in correct:
        pred = parse_timestamps(s["a"])
        if pred is None:
            failed += 1
            continue
        ious.append(float(_iou(s["tgt"], pred[0])[0, 0]))
    n = len(samples)
    out = {"Total": n, "Failed": failed, **_recall_block(ious, n, "R", "mRec")}
    out["Acc"] = round(len(correct) / n, 5)
    return out


# ------------------------------------------------------------------------------------------------
# Captioning (dvc, slc).
# ------------------------------------------------------------------------------------------------

# pycocoevalcap's PTBTokenizer drops these tokens after tokenizing
_PUNCTUATION = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
                "...", ";"}
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "jr.", "sr.", "vs.", "etc.", "inc.", "ltd.", "co.", "no."}
_CLITICS = re.compile(r"(?i)^(.+?)(n't|'s|'re|'m|'ll|'d|'ve)$")
_SPECIAL_SPLITS = {"cannot": "can not", "gonna": "gon na", "gotta": "got ta", "wanna": "wan na",
                   "'tis": "'t is", "'twas": "'t was"}


def _split_token(tok: str) -> list[str]:
    """PTB pieces of one whitespace-free chunk (lower case)."""
    if tok in _SPECIAL_SPLITS:
        return _SPECIAL_SPLITS[tok].split()
    lead: list[str] = []
    trail: list[str] = []
    # leading quotes, brackets and symbols
    while tok and tok[0] in "\"'`([{$#":
        if tok[0] == "#" and len(tok) > 1 and tok[1].isalnum():
            break
        lead.append(_BRACKETS.get(tok[0], "``" if tok[0] in "\"'`" else tok[0]))
        tok = tok[1:]
    # trailing punctuation, quotes and brackets
    while tok:
        if tok.endswith("...") and tok != "...":
            trail.insert(0, "...")
            tok = tok[:-3]
        elif tok.endswith("--") and tok != "--":
            trail.insert(0, "--")
            tok = tok[:-2]
        elif tok[-1] in "?!" and len(tok) > 1:  # a run of ?/! is one token ("?!" stays: not in the filter)
            run = len(tok) - len(tok.rstrip("?!"))
            run = min(run, len(tok) - 1)
            trail.insert(0, tok[-run:])
            tok = tok[:-run]
        elif tok[-1] in ",;:\"')]}%" and len(tok) > 1:
            trail.insert(0, _BRACKETS.get(tok[-1], "''" if tok[-1] in "\"'" else tok[-1]))
            tok = tok[:-1]
        elif tok[-1] == "." and len(tok) > 1 and tok not in _ABBREVIATIONS and not re.fullmatch(r"([a-z]\.)+", tok):
            trail.insert(0, ".")
            tok = tok[:-1]
        else:
            break
    pieces: list[str] = []
    if tok:
        for i, part in enumerate(tok.split("--")):  # "video--really" -> video -- really
            if i:
                pieces.append("--")
            if part in _BRACKETS:
                pieces.append(_BRACKETS[part])
            elif m := _CLITICS.match(part):
                stem, clitic = m.group(1), m.group(2)
                stem = {"ca": "ca", "wo": "wo"}.get(stem, stem)  # can't -> ca n't, won't -> wo n't
                pieces += [stem, clitic]
            elif part:
                pieces.append(part)
    return lead + pieces + trail


def ptb_tokenize(text: str) -> str:
    """What pycocoevalcap's ``PTBTokenizer`` (Stanford PTBTokenizer 3.4.1, ``-lowerCase``) followed by
    its punctuation filter makes of one caption, re-implemented for ordinary English text.

    >>> ptb_tokenize("He's adding salt, then (gently) stirs. Don't stop!")
    "he 's adding salt then -lrb- gently -rrb- stirs do n't stop"
    """
    tokens: list[str] = []
    for chunk in text.replace("\n", " ").lower().split():
        tokens += _split_token(chunk)
    return " ".join(t for t in tokens if t not in _PUNCTUATION)


def remove_nonascii(text: str) -> str:
    """Every non-ASCII character becomes a space (as the reference does before tokenizing)."""
    return "".join(c if ord(c) < 128 else " " for c in text)


def _interval_iou(a, b) -> float:
    """The captioning evaluator's tIoU (Python floats): intersection / (min(span, sum of lengths) + 1e-8)."""
    inter = max(0, min(b[1], a[1]) - max(b[0], a[0]))
    union = min(max(b[1], a[1]) - min(b[0], a[0]), b[1] - b[0] + a[1] - a[0])
    return float(inter) / (union + 1e-8)


def _detection(refs: list, preds: list, tiou: float) -> tuple[float, float]:
    """Precision (share of predictions overlapping a reference at tIoU > t) and recall of one video."""
    ref_hit, pred_hit = set(), set()
    for i, p in enumerate(preds):
        for j, r in enumerate(refs):
            if _interval_iou(p, r) > tiou:
                ref_hit.add(j)
                pred_hit.add(i)
    return len(pred_hit) / len(preds), len(ref_hit) / len(refs)


def _random_string(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(10, 20)))


def _caption_similarity(gts: list[str], preds: list[str], encode) -> float:
    """Mean over pairs of the dot product of the pair's embeddings; each list encoded in one call
    and the full ``[n, n]`` dot matrix taken, as the reference does (same float32 arithmetic)."""
    import torch

    a = torch.as_tensor(np.asarray(encode(gts), dtype=np.float32))  # [n, d]
    b = torch.as_tensor(np.asarray(encode(preds), dtype=np.float32))  # [n, d]
    score = torch.mm(a, b.transpose(0, 1))  # [n, n]
    diag = [score[i, i].item() for i in range(score.shape[0])]
    return float(sum(diag) / len(diag))


def dvc_scores(samples: list[dict], encode, *, seed: int = 0, coco=None) -> dict:
    """``dvc`` / ``slc``: dense-captioning detection F1 and sentence similarity.

    Answers parse with :func:`dvc_format` (failed if nothing); videos with a parsed answer are
    evaluated (the reference keys by ``video``: a later sample of the same video replaces an
    earlier one), at most 1,000 events each. Per tIoU t in 0.1, 0.3, 0.5, 0.7: precision / recall
    averaged over those videos (a match needs tIoU > t), both scaled by the share of samples that
    parsed, F1 of the two; ``F1`` = mean over t. ``SentSim``: every predicted caption is paired with
    each ground-truth caption it overlaps at tIoU >= t (else with a random string), captions
    :func:`remove_nonascii` + :func:`ptb_tokenize`-d, per video the mean pair similarity
    (``encode``: ``list[str] -> [n, d]``), then the mean over videos and over t.

    ``coco``: optional ``{video: [(gt, pred), ...]} -> {metric: value}`` (tokenized pairs of one t),
    e.g. :func:`museg_lit.evaluation.caption_metrics.coco_scorer`; its metrics are averaged over t
    like SentSim (the reference's BLEU / METEOR / ROUGE-L / CIDEr).

    Example: gt 0-10 "a man cuts", answer "0 - 10 seconds, a man cuts." (one video of one sample):
    precision = recall = 1 at every t -> F1 1.0; SentSim = sim("a man cuts", "a man cuts").
    """
    rng = random.Random(seed)
    gts, preds, failed = {}, {}, 0
    for s in samples:
        times, caps = dvc_format(s["a"])
        if times is None:
            failed += 1
            continue
        gts[s["video"]] = (s["tgt"], s["g"])
        preds[s["video"]] = list(zip(times, caps, strict=True))[:1000]
    scale = len(preds) / len(samples)
    recall, precision, sentsim = [], [], []
    coco_values: dict[str, list[float]] = {}
    for t in THRESHOLDS:
        tokenized: dict[str, list[tuple[str, str]]] = {}  # video -> [(gt caption, predicted caption)]
        for video, (ref_times, ref_caps) in gts.items():
            pairs = []
            for p_time, p_cap in preds[video]:
                matched = [ref_caps[j] for j, r in enumerate(ref_times) if _interval_iou(p_time, r) >= t]
                pairs += [(g, p_cap) for g in matched] or [(_random_string(rng), p_cap)]
            tokenized[video] = [(ptb_tokenize(remove_nonascii(g)), ptb_tokenize(remove_nonascii(p))) for g, p in pairs]
        per_video = [_caption_similarity([g for g, _ in v], [p for _, p in v], encode) for v in tokenized.values()]
        sentsim.append(float(np.mean(per_video)) if per_video else 0.0)
        if coco is not None:
            for name, value in coco(tokenized).items():
                coco_values.setdefault(name, []).append(value if tokenized else 0.0)
        pr = [_detection(gts[v][0], [p for p, _ in preds[v]], t) for v in gts]
        precision.append(sum(p for p, _ in pr) / len(pr) if pr else 0.0)
        recall.append(sum(r for _, r in pr) / len(pr) if pr else 0.0)
    out: dict = {"Total": len(samples), "Failed": failed}
    f1s = []
    for t, rec, prc in zip(THRESHOLDS, recall, precision, strict=True):
        rec, prc = rec * scale, prc * scale
        f1 = 0 if prc + rec == 0 else 2 * prc * rec / (prc + rec)
        out[f"F1@{t}"] = round(f1, 5)
        f1s.append(f1)
    out["F1"] = round(sum(f1s) / len(f1s), 5)
    out.update({name: round(sum(v) / len(v), 5) for name, v in coco_values.items()})
    out["SentSim"] = round(sum(sentsim) / len(sentsim), 5)
    return out


# ------------------------------------------------------------------------------------------------
# The whole benchmark.
# ------------------------------------------------------------------------------------------------


class _Similarity:
    """``sim(a, b)`` = dot of ``encode([a])`` and ``encode([b])`` (one text per call, as the
    reference's ``compute_sim``), embeddings cached per text."""

    def __init__(self, model):
        self.model, self.cache = model, {}

    def embed(self, text: str):
        import torch

        if text not in self.cache:
            self.cache[text] = torch.as_tensor(np.asarray(self.model.encode([text]), dtype=np.float32))  # [1, d]
        return self.cache[text]

    def __call__(self, a: str, b: str) -> float:
        import torch

        return float(torch.mm(self.embed(a), self.embed(b).transpose(0, 1))[0, 0])  # [1, 1]


def score_group(task: str, samples: list[dict], sentsim=None, coco=None) -> dict:
    """The reference's ``metrics.json`` entry of one (task, source) group."""
    if task in SENTSIM_TASKS and sentsim is None:
        raise SentSimRequired(f"E.T. Bench task {task} needs the sentence-similarity model (sentsim)")
    if task in ("tvg", "epm"):
        return tvg_scores(samples)
    if task == "tem":
        return tem_scores(samples)
    if task == "tal":
        return tal_scores(samples)
    if task == "evs":
        return evs_scores(samples)
    if task == "vhd":
        return vhd_scores(samples)
    sim = sentsim if isinstance(sentsim, _Similarity) else _Similarity(sentsim)
    if task in ("rar", "eca", "rvq"):
        return option_scores(samples, sim)
    if task == "gvq":
        return gvq_scores(samples, sim)
    if task in ("dvc", "slc"):
        return dvc_scores(samples, sim.model.encode, coco=coco)
    raise ValueError(f"unknown E.T. Bench task {task!r}; known: {', '.join(ALL_TASKS)}")


def etbench_metrics(records: Iterable[dict], sentsim=None, *, subset: dict | None = None,
                    caption_metrics: bool = False) -> dict:
    """Score E.T. Bench answers as ``compute_metrics.py`` does.

    Args:
        records: E.T. Bench items (``task``, ``source``, ``tgt``, ``o``, ``p``, ``g``, ``video``, ...)
            each with ``a``, the model's raw answer (the content of its ``<answer>``).
        sentsim: any object with ``encode(list[str]) -> [n, d]`` (a ``SentenceTransformer``; the
            reference uses all-MiniLM-L6-v2); required when a record's task is in
            :data:`SENTSIM_TASKS` (else :class:`SentSimRequired`).
        subset: ``{task: {source: [idx, ...]}}`` (MUSEG's ``subset.json``), as the reference's
            ``--subset``: every (task, source) of ``records`` stays a group, holding only its
            records whose ``idx`` is listed. An empty ``evs`` group scores ``F1`` 0 and counts in
            the task's mean over sources (the reference's quirk: E.T. Bench's subset lists no
            ``summe`` sample, so the subset's EVS is half the tvsum F1); other empty groups, where
            the reference crashes, are left out.
        caption_metrics: also BLEU-1..4, ROUGE-L, CIDEr (and METEOR with Java) for ``dvc`` / ``slc``,
            with pycocoevalcap (:mod:`museg_lit.evaluation.caption_metrics`; ImportError without it).

    Returns a dict with ``per_task[task][source]`` (the reference's ``metrics.json``),
    ``task_means[task]`` (mean over sources of the task's Overall key, 5 decimals), ``overall``
    (the 14 columns of the Overall row, in percent with 1 decimal; None for a missing task),
    ``merged`` (``Acc (ref)``, ``F1 (gnd)``, ``F1 (cap)``, ``Sim (cap)``, ``Rec (com)``, percent, 1
    decimal; None unless all its tasks are present) and ``avg`` (MUSEG's E.T. Bench average: the
    mean of ref, gnd, cap F1 and com, percent, 1 decimal; None unless all 12 tasks are present).
    """
    groups: dict[str, dict[str, list[dict]]] = {}
    for r in records:
        group = groups.setdefault(r["task"], {}).setdefault(r["source"], [])
        if subset is None or r["idx"] in subset.get(r["task"], {}).get(r["source"], ()):
            group.append(r)
    groups = {task: kept for task, by_source in groups.items()
              if (kept := {src: g for src, g in by_source.items() if g or task == "evs"})}
    if sentsim is None and (need := sorted(set(groups) & set(SENTSIM_TASKS))):
        raise SentSimRequired(f"E.T. Bench tasks {', '.join(need)} need the sentence-similarity model (sentsim)")
    sim = _Similarity(sentsim) if sentsim is not None else None
    coco = None
    if caption_metrics and {"dvc", "slc"} & set(groups):
        from museg_lit.evaluation.caption_metrics import coco_scorer

        coco = coco_scorer()
    per_task = {task: {source: score_group(task, samples, sim, coco) for source, samples in by_source.items()}
                for task, by_source in groups.items()}
    means: dict[str, float] = {}
    overall: dict[str, float | None] = {}
    for column, task, key in OVERALL_COLUMNS:
        if task in per_task:
            values = [d[key] for d in per_task[task].values()]
            means[column] = round(sum(values) / len(values), 5)
        overall[column] = round(means[column] * 100, 1) if column in means else None
    merged: dict[str, float | None] = {}
    merged_raw: dict[str, float] = {}
    for column, parts in MERGED_COLUMNS:
        if all(p in means for p in parts):
            merged_raw[column] = sum(means[p] for p in parts) * 100 / len(parts)
        merged[column] = round(merged_raw[column], 1) if column in merged_raw else None
    avg = None
    if all(c in merged_raw for c in AVG_COLUMNS):
        avg = round(sum(merged_raw[c] for c in AVG_COLUMNS) / len(AVG_COLUMNS), 1)
    task_means = {task: means[col] for col, task, key in OVERALL_COLUMNS if col in means and key != "SentSim"}
    task_means.update({f"{task}_sim": means[col] for col, task, key in OVERALL_COLUMNS
                       if col in means and key == "SentSim"})
    return {"per_task": per_task, "task_means": task_means, "overall": overall, "merged": merged, "avg": avg}
