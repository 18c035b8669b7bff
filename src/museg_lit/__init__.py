"""museg_lit: GRPO training of video LLMs for temporal grounding (MUSEG, LongVTG-R1)."""

__version__ = "0.1.0"

from museg_lit.resolvers import register_resolvers as _register_resolvers

# ${museg.*} in conf/ must resolve in every process that composes or receives a config: the entry
# points, each launcher's jobs (submitit unpickles the task in a fresh interpreter) and tests
_register_resolvers()
