"""Question templates and chat messages of the MUSEG recipe.

The two templates are MUSEG's verbatim strings (released with the MUSEG code, arXiv 2505.20715):
the released MUSEG-3B/7B checkpoints were trained and evaluated with exactly these, so a single
changed character lowers their scores. ``frame_selection_thinking`` is used for stage 1 and for
evaluation; ``frame_selection_thinking_n_timestamp`` for stage 2 (it drops the instruction to cite
timestamps while thinking, which stage 2's ``format_no_timestamp`` reward no longer checks).

The question phrasings in :data:`TVG_PHRASINGS` / :data:`TAL_PHRASINGS` are the twelve phrasings
that occur in MUSEG's stage_1.jsonl/stage_2.jsonl (``'{}'`` stands for the query); the synthetic
data generator uses them so that generated questions look like the real ones.
"""

from __future__ import annotations

# Qwen's chat template closes every turn with this token; a completion ends with it (generation stops there).
END_OF_TURN = "<|im_end|>"

TEMPLATES: dict[str, str] = {
    "frame_selection_thinking": (
        "{} First, output reasoning process in <think> </think> tags. The reasoning process must "
        "REFER TO SPECIFIC TIMESTAMPS TO TELL WHERE YOU GET THE INFORMATION FROM THE VIDEO. Then "
        "summarize your reasoning process above and output selected segments like "
        '"<answer>X.XX-X.XX</answer>", where "X" denotes arabic numbers. If there are multiple '
        'segments, separate them with spaces like "<answer>X.XX-X.XX X.XX-X.XX</answer>". Your '
        'output format should be like "<think>...</think><answer>...</answer>".'
    ),
    "frame_selection_thinking_n_timestamp": (
        "{} First, output reasoning process in <think> </think> tags. Then summarize your "
        "reasoning process above and output selected segments like "
        '"<answer>X.XX-X.XX</answer>", where "X" denotes arabic numbers. If there are multiple '
        'segments, separate them with spaces like "<answer>X.XX-X.XX X.XX-X.XX</answer>". Your '
        'output format should be like "<think>...</think><answer>...</answer>".'
    ),
    # No template: the question alone (for custom rewards / ablations).
    "plain": "{}",
}

TVG_PHRASINGS: tuple[str, ...] = (
    "Give you a textual query: '{}'. When does the described content occur in the video? "
    "Please return the timestamp in seconds.",
    "The given natural language query '{}' is semantically aligned with a video moment, please "
    "give the start time and end time of the video moment.",
    "Locate the visual content mentioned in the text query '{}' within the video using timestamps.",
    "Detect and report the start and end timestamps of the video segment that semantically matches "
    "the given textual query '{}'.",
    "Find the video segment that corresponds to the given textual query '{}' and determine its "
    "start and end seconds.",
    "Localize the visual content described by the given textual query '{}' in the video, and "
    "output the start and end timestamps in seconds.",
)

TAL_PHRASINGS: tuple[str, ...] = (
    "Detect and localize all the video segments containing the given action '{}', and provide the "
    "outputs using start and end timestamps.",
    "Find all the sections of the video where the action '{}' occurs, and report the results with "
    "their respective start and end timestamps.",
    "Discover and determine the locations of all video portions containing the action '{}', and "
    "return the start and end time in seconds.",
    "Identify and list all segments of the video where the action '{}' takes place, providing the "
    "start and end times for each instance.",
    "Locate all instances of the action '{}' in the video and give me the start and end times for "
    "each occurrence.",
    "For the given action '{}', locate all corresponding video sections and present the results "
    "with starting and ending timestamps.",
)


def render_question(problem: str, template: str) -> str:
    """Fill a named template with the sample's question.

    >>> render_question("When?", "plain")
    'When?'
    """
    try:
        fmt = TEMPLATES[template]
    except KeyError:
        raise KeyError(f"unknown question template {template!r}; known: {sorted(TEMPLATES)}") from None
    # str.replace, not str.format: questions may contain braces.
    return fmt.replace("{}", problem, 1)


def video_messages(question: str, system_prompt: str | None = None) -> list[dict]:
    """Chat messages for one video question, in the layout qwen-vl-utils users pass to
    ``apply_chat_template`` (video first, then the text), as MUSEG does."""
    messages: list[dict] = []
    if system_prompt:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    messages.append(
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}
    )
    return messages
