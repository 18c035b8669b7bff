"""The two questions of ground-then-answer and how their answers are read.

* Stage 1 (grounding): the QA question is the *query* of a grounding template
  (``frame_selection_thinking`` by default, MUSEG's evaluation template), so a grounding model is
  asked in the form it was trained on; its answer is parsed by MUSEG's evaluation rule
  (:func:`museg_lit.evaluation.metrics.parse_prediction`).
* Stage 2 and the baseline (answering): the question, the lettered options, and the instruction
  LongVideoBench's and Video-MME's reference prompts use ("Answer with the option's letter from
  the given choices directly."). On a window the text first says which seconds of the video the
  clip shows (:func:`window_note`): Qwen2.5-VL's temporal positions start at the clip's first frame,
  so without the note the model cannot tell a window from a whole video.
* :func:`parse_option_letter` reads the letter from free text.
"""

from __future__ import annotations

import re

from museg_lit.evaluation.qa.loaders import LETTERS
from museg_lit.prompts import render_question

__all__ = ["ANSWER_INSTRUCTION", "grounding_question", "mc_question", "parse_option_letter", "window_note"]

ANSWER_INSTRUCTION = "Answer with the option's letter from the given choices directly."


def grounding_question(question: str, template: str = "frame_selection_thinking") -> str:
    """Stage 1: the question as a grounding query.

    >>> grounding_question("What colour is the shape right after the red circle?", "plain")
    "Find the video segment needed to answer the question: 'What colour is the shape right after the red circle?'"
    """
    query = f"Find the video segment needed to answer the question: '{question.strip()}'"
    return render_question(query, template)


def window_note(start: float, end: float) -> str:
    """``"This clip shows seconds 12.00 to 20.50 of the video."``"""
    return f"This clip shows seconds {start:.2f} to {end:.2f} of the video."


def mc_question(question: str, options: list[str], note: str | None = None) -> str:
    """The multiple-choice prompt.

    >>> print(mc_question("Which colour?", ["red", "blue"]))
    Which colour?
    A. red
    B. blue
    Answer with the option's letter from the given choices directly.
    """
    lines = ([note] if note else []) + [question.strip()]
    lines += [f"{LETTERS[i]}. {text}" for i, text in enumerate(options)]
    return "\n".join([*lines, ANSWER_INSTRUCTION])


# Deliberately not MUSEG's strict extraction (museg_lit.rewards.parsing.extract_answer): a letter is
# looked for in the one complete <answer>...</answer> pair (any case, stray tags tolerated), else in
# the whole text, so that an answer model that ignores the tags is still read.
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
# "answer is (B)", "Answer: C", "option D", "Best option: (A"
_STATED = re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*[:\-]?\s*\(?\s*([A-J])\b")
_LEADING = re.compile(r"^\W*\(?([A-J])\)?(?:[\s.:)\],]|$)")
_LONE = re.compile(r"(?<![A-Za-z])([A-J])(?![A-Za-z])")


def parse_option_letter(output: str, options: list[str]) -> str | None:
    """The option letter an answer names, or None. Tried in order, the first that decides wins:

    1. inside a single ``<answer>...</answer>`` if there is one, else the whole text;
    2. a letter at the start (``"B"``, ``"(B) blue"``, ``"B. blue"``; capitals only), unless another
       valid letter stands alone later (``"C or D"`` is undecided);
    3. a stated choice (``"The answer is (C)."``, ``"Answer: C"``);
    4. exactly one option text quoted whole (``"blue"``, case-insensitive, nothing else);
    5. exactly one distinct standalone capital among the valid letters (``"I think C"``; not the
       article in ``"A red circle"``: that sentence starts with ``A`` followed by a space, which
       rule 2 takes as ``A`` - the usual convention of MC scorers, kept for comparability).

    Letters beyond ``len(options)`` never count.

    >>> opts = ["red", "green", "blue", "white"]
    >>> [parse_option_letter(o, opts) for o in ("C", "(B) green", "The answer is D.", "blue", "red or blue", "E")]
    ['C', 'B', 'D', 'C', None, None]
    """
    valid = LETTERS[: len(options)]
    tags = _ANSWER_TAG.findall(output)
    text = (tags[0] if len(tags) == 1 else output).strip()
    lone = {m for m in _LONE.findall(text) if m in valid}  # every standalone valid capital
    m = _LEADING.search(text)
    if m and m.group(1) in valid and lone <= {m.group(1)}:
        return m.group(1)
    m = _STATED.search(text)
    if m and m.group(1) in valid:
        return m.group(1)
    lowered = text.lower().strip(" .!\"'")
    matches = [i for i, o in enumerate(options) if o.strip().lower() == lowered]
    if len(matches) == 1:
        return valid[matches[0]]
    return lone.pop() if len(lone) == 1 else None
