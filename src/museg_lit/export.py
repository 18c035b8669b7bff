"""Export the trained policy as a Hugging Face directory (``save_pretrained`` + processor).

The export is what stage 2 starts from (``+experiment=stage2 model.path=<export>``) and what the
evaluation runner loads. It is written to a temporary sibling directory and renamed into place, so
a crash mid-write never leaves a half-written directory under the final name. A LoRA policy is
merged into its base weights (``merge_lora=True``) or saved as an adapter directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import lightning as L
import torch


def export_hf(policy: torch.nn.Module, processor, out_dir: str | Path, *, merge_lora: bool = True) -> Path:
    """Write ``policy`` (+ generation config) and ``processor`` to ``out_dir`` atomically."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model = policy
        if merge_lora and hasattr(policy, "merge_and_unload"):  # peft model
            model = _merged_copy(policy)
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _merged_copy(peft_model: torch.nn.Module) -> torch.nn.Module:
    """Merge LoRA weights without touching the training model (merge a deep copy)."""
    import copy

    return copy.deepcopy(peft_model).merge_and_unload()


class ExportCallback(L.Callback):
    """At the end of training, export the policy to ``dirpath`` (rank 0 only)."""

    def __init__(self, dirpath: str, merge_lora: bool = True):
        self.dirpath, self.merge_lora = dirpath, merge_lora

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.is_global_zero:
            export_hf(pl_module.policy, pl_module.processor, self.dirpath, merge_lora=self.merge_lora)
