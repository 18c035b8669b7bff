"""Multiple-choice video QA: loaders of public formats, prompts and letter parsing, the window
rule, scores, the picture, and the ground-then-answer runner (LongVTG-R1, reconstructed)."""
