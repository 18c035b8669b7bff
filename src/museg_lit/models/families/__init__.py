"""Model families, one module each (DESIGN.md "Model families"): what differs between Qwen2.5-VL,
Qwen3-VL and Qwen3.5. So far: :mod:`.qwen3_vl` (time as text, positions); the Qwen2.5-VL rule
lives in :mod:`museg_lit.models.positions` until the family plug-in interface lands (issue 23)."""
