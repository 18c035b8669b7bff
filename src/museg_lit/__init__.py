"""museg_lit: GRPO training of video LLMs for temporal grounding (MUSEG, LongVTG-R1)."""

__version__ = "0.1.0"
