"""A small Qwen2-style tokenizer trained locally, plus our Qwen2.5-VL chat template.

The tiny model (``museg_lit.models.tiny``) needs a tokenizer that behaves like Qwen2.5-VL's
where it matters to the RL code, without downloading anything:

* the same pre-tokenisation: NFC normaliser, Qwen2's split regex (``\\p{N}`` -> one token per
  digit, which is what makes timestamp tokens like ``1``, ``2``, ``.``, ``5``, ``0`` separable for
  token-aware KL), then ``ByteLevel(add_prefix_space=False, use_regex=False)``, and a ByteLevel
  decoder;
* the same special tokens, appended after the BPE vocabulary in Qwen's order (``<|endoftext|>``
  first, ``<|video_pad|>`` last), ``<|endoftext|>`` as pad and ``<|im_end|>`` as eos, no bos/unk;
* the same conversation rendering (``QWEN25VL_CHAT_TEMPLATE``).

Departures from Qwen's originals:

* The BPE merges are learnt with the ``tokenizers`` library on a small built-in corpus (MUSEG
  question templates, grounding questions, ``<think>...</think><answer>s-e</answer>`` answers,
  sentences about coloured shapes appearing and disappearing), so ``vocab_size`` is an upper bound:
  the corpus runs out of merges first (901 tokens in all with the default corpus). Token ids
  therefore differ from Qwen's (151,665 tokens); only the special *strings* are the same.
* The chat template is written here (not copied); it renders the same text as Qwen2.5-VL's for
  system / user / assistant turns with string content or lists of ``text`` / ``image`` / ``video``
  parts, including the default system prompt and ``add_vision_id``. Tool calls are not supported.

Training is deterministic: the same corpus and ``vocab_size`` give byte-identical vocabularies and
merges (the corpus is generated from a fixed seed, and the BPE trainer breaks count ties by pair id).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "QWEN25VL_CHAT_TEMPLATE",
    "QWEN2_PRETOKENIZE_REGEX",
    "QWEN3VL_ADDED_TOKENS",
    "QWEN3VL_CHAT_TEMPLATE",
    "QWEN3VL_SPECIAL_TOKENS",
    "SPECIAL_TOKENS",
    "build_qwen3_vl_tokenizer",
    "build_tokenizer",
    "default_corpus",
    "train_bpe",
]

# Qwen2's split pattern (transformers/models/qwen2/tokenization_qwen2.py). `\p{N}` on its own
# (not `\p{N}+`) is what splits "12.50" into single-digit pre-tokens.
QWEN2_PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# Qwen2.5-VL's special tokens in their id order (151643 ... 151656 in the real vocabulary).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# Renders Qwen2.5-VL's format:
#   <|im_start|>system\nYou are a helpful assistant.<|im_end|>\n      (when no system turn is given)
#   <|im_start|>{role}\n{content}<|im_end|>\n                          (for every turn)
#   <|im_start|>assistant\n                                            (add_generation_prompt)
# A video part becomes <|vision_start|><|video_pad|><|vision_end|>; the processor later expands the
# single <|video_pad|> into one token per merged patch. Whitespace control (`{%-`, `-%}`) is used
# on every tag and all literal text is emitted through `{{ }}`, so the layout of this file never
# leaks newlines into the prompt.
def _chat_template(default_system_prompt: str | None) -> str:
    """The chat template's text for system / user / assistant turns with string content or lists of
    text / image / video parts; with ``default_system_prompt``, a conversation without a system turn
    gets one (Qwen2.5-VL's behaviour; Qwen3-VL's template adds none)."""
    system = ("  {%- if loop.first and message['role'] != 'system' -%}\n"
              "    {{- '<|im_start|>system\\n" + default_system_prompt + "<|im_end|>\\n' -}}\n"
              "  {%- endif -%}\n") if default_system_prompt else ""
    return (
        "{%- set counter = namespace(images=0, videos=0) -%}\n"
        "{%- for message in messages -%}\n"
        + system +
        "  {{- '<|im_start|>' + message['role'] + '\\n' -}}\n"
        "  {%- if message['content'] is string -%}\n"
        "    {{- message['content'] -}}\n"
        "  {%- else -%}\n"
        "    {%- for part in message['content'] -%}\n"
        "      {%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}\n"
        "        {%- set counter.images = counter.images + 1 -%}\n"
        "        {%- if add_vision_id -%}{{- 'Picture ' + counter.images|string + ': ' -}}{%- endif -%}\n"
        "        {{- '<|vision_start|><|image_pad|><|vision_end|>' -}}\n"
        "      {%- elif part['type'] == 'video' or 'video' in part -%}\n"
        "        {%- set counter.videos = counter.videos + 1 -%}\n"
        "        {%- if add_vision_id -%}{{- 'Video ' + counter.videos|string + ': ' -}}{%- endif -%}\n"
        "        {{- '<|vision_start|><|video_pad|><|vision_end|>' -}}\n"
        "      {%- elif 'text' in part -%}\n"
        "        {{- part['text'] -}}\n"
        "      {%- endif -%}\n"
        "    {%- endfor -%}\n"
        "  {%- endif -%}\n"
        "  {{- '<|im_end|>\\n' -}}\n"
        "{%- endfor -%}\n"
        "{%- if add_generation_prompt -%}\n"
        "  {{- '<|im_start|>assistant\\n' -}}\n"
        "{%- endif -%}\n"
    )


QWEN25VL_CHAT_TEMPLATE = _chat_template(DEFAULT_SYSTEM_PROMPT)

# Qwen3-VL's added tokens in their id order (151643 ... 151668 in the released vocabulary).
# The first 14 are special; the tool / fim / think tokens are added but not special.
QWEN3VL_SPECIAL_TOKENS: tuple[str, ...] = SPECIAL_TOKENS  # the same 14 as Qwen2.5-VL
QWEN3VL_ADDED_TOKENS: tuple[str, ...] = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)

# Renders the text of Qwen3-VL-Instruct's chat template for system / user / assistant turns with
# string content or lists of text / image / video parts (written here, not copied). Differences
# from Qwen2.5-VL's: no default system prompt when the conversation has no system turn. Tools and
# reasoning_content are not supported.
QWEN3VL_CHAT_TEMPLATE = _chat_template(None)

# --------------------------------------------------------------------------------------------
# Built-in corpus
# --------------------------------------------------------------------------------------------

# The two MUSEG question templates, verbatim (also in data/museg/templates.json of the release);
# they open every training and evaluation prompt, so they should tokenize into few tokens.
_MUSEG_TEMPLATES = (
    "{} First, output reasoning process in <think> </think> tags. The reasoning process must REFER TO "
    "SPECIFIC TIMESTAMPS TO TELL WHERE YOU GET THE INFORMATION FROM THE VIDEO. Then summarize your "
    'reasoning process above and output selected segments like "<answer>X.XX-X.XX</answer>", where "X" '
    'denotes arabic numbers. If there are multiple segments, separate them with spaces like "<answer>X.XX-'
    'X.XX X.XX-X.XX</answer>". Your output format should be like "<think>...</think><answer>...</answer>".',
    "{} First, output reasoning process in <think> </think> tags. Then summarize your reasoning process "
    'above and output selected segments like "<answer>X.XX-X.XX</answer>", where "X" denotes arabic '
    'numbers. If there are multiple segments, separate them with spaces like "<answer>X.XX-X.XX X.XX-'
    'X.XX</answer>". Your output format should be like "<think>...</think><answer>...</answer>".',
)

# Grounding questions in the style of the MUSEG training data (tvg: one moment; tal: all segments).
_QUESTIONS = (
    "Detect and report the start and end timestamps of the video segment that semantically matches "
    "the given textual query '{}'.",
    "Locate the visual content mentioned in the text query '{}' within the video using timestamps.",
    "Give you a textual query: '{}'. When does the described content occur in the video? Please "
    "return the timestamp in seconds.",
    "The given natural language query '{}' is semantically aligned with a video moment, please give "
    "the start time and end time of the video moment.",
    "Find all the sections of the video where the action '{}' occurs, and report the results with "
    "their respective start and end timestamps.",
    "Please find the visual event described by a sentence in the video, determining its starting and "
    "ending times. Now I will give you the textual sentence: {}.",
    "When does the {} happen in the video?",
)

_COLOURS = (
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "white",
    "black",
    "pink",
    "cyan",
    "grey",
    "brown",
)
_SHAPES = (
    "circle",
    "square",
    "triangle",
    "star",
    "rectangle",
    "disk",
    "ball",
    "box",
    "diamond",
    "hexagon",
    "ring",
    "cross",
)
_EVENTS = (
    "appears",
    "disappears",
    "moves to the left",
    "moves to the right",
    "grows",
    "shrinks",
    "flashes",
    "is visible",
    "fades in",
    "fades out",
    "rotates",
    "stops moving",
)
_ACTIVITIES = (
    "person opening a door",
    "person eating a sandwich",
    "person turns on the light",
    "a person is cooking in the kitchen",
    "person pour a glass of water",
    "throwing darts",
    "rafting",
    "playing the piano",
    "person sitting on a chair",
    "person holding a phone",
    "someone running",
    "person closing the laptop",
    "washing dishes",
    "riding a bike",
    "person laughing",
    "person putting a book on the shelf",
)
_THOUGHTS = (
    "The {c} {s} {e} at {a} seconds and is gone at {b} seconds.",
    "From {a} to {b} the {c} {s} {e}, so this segment matches the query.",
    "At {a}s I can see a {c} {s}; it {e} until {b}s.",
    "Looking at the frames, the event starts around {a} and ends around {b}.",
    "Between {a} and {b} seconds the video shows the {c} {s}.",
)


def _fmt(x: float) -> str:
    return f"{x:.2f}"


def default_corpus(n_samples: int = 2000, seed: int = 0) -> Iterator[str]:
    """Yield the built-in training corpus (deterministic for a given ``n_samples`` and ``seed``)."""
    rng = random.Random(seed)
    yield "system\n" + DEFAULT_SYSTEM_PROMPT
    yield "user\n"
    yield "assistant\n"
    yield from (t.format("") for t in _MUSEG_TEMPLATES)
    yield " ".join(str(i) for i in range(1000))
    for _ in range(n_samples):
        colour, shape, event = rng.choice(_COLOURS), rng.choice(_SHAPES), rng.choice(_EVENTS)
        query = rng.choice(
            (f"the {colour} {shape} {event}", f"a {colour} {shape} {event}", rng.choice(_ACTIVITIES))
        )
        question = rng.choice(_QUESTIONS).format(query)
        yield rng.choice(_MUSEG_TEMPLATES).format(question)

        segments = []
        start = rng.uniform(0.0, 30.0)
        for _ in range(rng.randint(1, 3)):
            end = start + rng.uniform(0.5, 20.0)
            segments.append((start, end))
            start = end + rng.uniform(0.5, 15.0)
        thoughts = " ".join(
            rng.choice(_THOUGHTS).format(c=colour, s=shape, e=event, a=_fmt(a), b=_fmt(b))
            for a, b in segments
        )
        answer = " ".join(f"{_fmt(a)}-{_fmt(b)}" for a, b in segments)
        yield f"<think>{thoughts}</think><answer>{answer}</answer>"
        yield f"The video lasts {rng.uniform(5, 300):.1f} seconds and was sampled at {rng.choice((1, 2, 4))} fps."


def train_bpe(corpus: Iterable[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE with Qwen2's pre-tokenizer; return (vocab, merges).

    The decoder is irrelevant for training; ``Qwen2TokenizerFast`` installs the ByteLevel decoder
    (and rebuilds this same normaliser / pre-tokenizer) when it wraps the vocabulary.
    """
    tok = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        # All 256 byte symbols, so any UTF-8 text (including unseen characters) can be encoded.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    # tokenizers >= 0.20 serialises merges as [left, right] pairs, older versions as "left right";
    # the BPE constructor wants tuples.
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def build_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train a Qwen2-style byte-level BPE locally and wrap it as a ``Qwen2TokenizerFast``.

    Args:
        corpus: training texts; ``None`` uses :func:`default_corpus`.
        vocab_size: upper bound on the total size *including* the 14 special tokens.

    Returns:
        A ``Qwen2TokenizerFast`` (in transformers 5 the same class as ``Qwen2Tokenizer``) with
        Qwen's special tokens, eos ``<|im_end|>``, pad ``<|endoftext|>``, right padding by default
        like Qwen's (callers that generate pass ``padding_side="left"``), and
        :data:`QWEN25VL_CHAT_TEMPLATE` as chat template.

    Example:
        >>> tok = build_tokenizer()
        >>> tok.tokenize("12.50")
        ['1', '2', '.', '5', '0']
    """
    return _qwen_tokenizer(corpus, vocab_size, SPECIAL_TOKENS, (), QWEN25VL_CHAT_TEMPLATE, model_max_length=32768)


def _qwen_tokenizer(corpus: Iterable[str] | None, vocab_size: int, specials: tuple[str, ...],
                    added_plain: tuple[str, ...], chat_template: str, *,
                    model_max_length: int) -> PreTrainedTokenizerFast:
    """The locally trained BPE with ``specials`` then ``added_plain`` (added, not special) appended in
    Qwen's order right after the BPE vocabulary; eos ``<|im_end|>``, pad ``<|endoftext|>``, no bos."""
    # Imported here so that corpus generation and BPE training need only `tokenizers`.
    from transformers import AddedToken, Qwen2TokenizerFast

    added_tokens = specials + added_plain
    n_added = len(added_tokens)
    if vocab_size <= 256 + n_added:
        raise ValueError(f"vocab_size must exceed {256 + n_added} (byte alphabet + added tokens)")
    vocab, merges = train_bpe(default_corpus() if corpus is None else corpus, vocab_size - n_added)
    # Declaring the added tokens through `added_tokens_decoder` (ids right after the BPE vocabulary)
    # makes them be added in Qwen's order; otherwise eos/pad would be added first.
    first_id = len(vocab)
    added = {first_id + i: AddedToken(t, special=t in specials, normalized=False) for i, t in enumerate(added_tokens)}
    tokenizer = Qwen2TokenizerFast(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[t for t in specials if t not in ("<|endoftext|>", "<|im_end|>")],
        added_tokens_decoder=added,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        errors="replace",
    )
    tokenizer.chat_template = chat_template
    got = tokenizer.convert_tokens_to_ids(list(added_tokens))
    if got != list(range(first_id, first_id + n_added)):  # guards against a transformers change
        raise RuntimeError(f"added tokens got unexpected ids {got}; expected {first_id}..")
    return tokenizer


def build_qwen3_vl_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """The :func:`build_tokenizer` BPE with Qwen3-VL's added tokens and chat template.

    Qwen3-VL's tokenizer is Qwen2.5-VL's plus 12 added, non-special tokens (tool / fim / think, see
    :data:`QWEN3VL_ADDED_TOKENS`), appended after the 14 specials in Qwen's order; eos
    ``<|im_end|>``, pad ``<|endoftext|>``, no bos, ``model_max_length`` 262,144 (the released
    tokenizer_config) and :data:`QWEN3VL_CHAT_TEMPLATE` (no default system prompt). The same
    tokenizer as ``experiments/reference/record_qwen3_vl.py`` builds for the 4.57.1 fixtures.

    Args:
        corpus: training texts; ``None`` uses :func:`default_corpus`.
        vocab_size: upper bound on the total size *including* the 26 added tokens.
    """
    return _qwen_tokenizer(corpus, vocab_size, QWEN3VL_SPECIAL_TOKENS, QWEN3VL_ADDED_TOKENS, QWEN3VL_CHAT_TEMPLATE,
                           model_max_length=262144)
