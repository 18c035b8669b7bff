"""RL maths for GRPO-family training: pure tensor functions, no Lightning state."""
