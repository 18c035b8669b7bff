"""Export the trained policy as a Hugging Face directory (``save_pretrained`` + processor).

The export is what stage 2 starts from (``+experiment=stage2 model.path=<export>``) and what the
evaluation runner loads. It is written to a temporary sibling directory and renamed into place, so
a crash mid-write never leaves a half-written directory under the final name. A LoRA policy is
merged into its base weights (``merge_lora=True``) or saved as an adapter directory.

Three ways in: :class:`ExportCallback` (the final policy, ``<run dir>/export``), the checkpoint
callback's ``export_hf=true`` (each kept checkpoint, :mod:`museg_lit.checkpointing`), and
:func:`export_checkpoint` (any saved Lightning checkpoint, after the fact, from the checkpoint alone:
``python -m museg_lit.export CKPT [OUT]``, :mod:`museg_lit.checkpoint_config`). Under a sharded strategy
(FSDP2) every rank takes part in gathering the full weights and rank 0 writes them.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path

import lightning as L
import torch

POLICY_PREFIX = "policy."  # GRPOModule keeps the policy as `self.policy`


class ExportError(ValueError):
    """A checkpoint that cannot be exported as asked (one line for the user, no traceback)."""


def export_hf(policy: torch.nn.Module, processor, out_dir: str | Path, *, merge_lora: bool = True,
              state_dict: dict | None = None) -> Path:
    """Write ``policy`` (+ generation config) and ``processor`` to ``out_dir`` atomically.

    ``state_dict``: full weights to write instead of ``policy.state_dict()`` (gathered from shards).
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.*.tmp"):  # an earlier export that a kill interrupted
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the export is shared like any directory
    try:
        model = policy
        if merge_lora and hasattr(policy, "merge_and_unload"):  # peft model
            model = _merged_copy(policy)
        model.save_pretrained(tmp, safe_serialization=True, **({"state_dict": state_dict} if state_dict else {}))
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
    return copy.deepcopy(peft_model).merge_and_unload()


def _is_sharded(module: torch.nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def gathered_state_dict(policy: torch.nn.Module) -> dict | None:
    """Full (unsharded) CPU weights of an FSDP2-sharded ``policy``; ``None`` for a plain module.

    A collective when sharded: call it on every rank (only rank 0 receives the tensors).
    """
    if not _is_sharded(policy):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(policy, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def export_module(pl_module, out_dir: str | Path, *, merge_lora: bool = True, is_global_zero: bool = True) -> None:
    """Export ``pl_module.policy`` with its processor; call on every rank (gathers shards first)."""
    state_dict = gathered_state_dict(pl_module.policy)
    if is_global_zero:
        if state_dict is not None and merge_lora and hasattr(pl_module.policy, "merge_and_unload"):
            raise NotImplementedError("merging LoRA adapters of a sharded policy is not supported")
        export_hf(pl_module.policy, pl_module.processor, out_dir, merge_lora=merge_lora, state_dict=state_dict)


def export_checkpoint(ckpt_path: str | Path, spec=None, out_dir: str | Path | None = None, *,
                      merge_lora: bool | None = None) -> Path:
    """Export the policy of a saved Lightning checkpoint (one file) as a Hugging Face directory.

    The checkpoint alone is enough: ``spec`` (the run's :class:`~museg_lit.models.factory.ModelSpec`,
    whose weights are replaced by the checkpoint's) defaults to ``model`` of the config stored in
    it, ``out_dir`` to ``step_00000024.hf`` next to it (the name ``export_hf=true`` gives), and
    ``merge_lora`` to the run's ``callbacks.export.merge_lora`` (else True). Example:
    ``export_checkpoint("logs/train/runs/default/checkpoints/step_00000024.ckpt")``; a checkpoint
    written before checkpoints stored their config needs ``spec=instantiate(cfg.model)``.
    """
    from hydra.utils import instantiate

    from museg_lit.checkpoint_config import CONFIG_KEY
    from museg_lit.models.factory import load_policy, load_processor

    ckpt_path = Path(ckpt_path)
    if ckpt_path.is_dir():
        raise NotImplementedError(f"{ckpt_path} is a sharded checkpoint directory: export it from the running "
                                  "job with the checkpoint callback's export_hf=true")
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    config = checkpoint.get(CONFIG_KEY) or {}
    if spec is None:
        if not config.get("model"):
            raise ExportError(f"{ckpt_path} stores no run config (written before checkpoints carried one): "
                             "pass the run's model spec, export_checkpoint(path, instantiate(cfg.model))")
        spec = instantiate(config["model"])
    if merge_lora is None:
        merge_lora = bool(((config.get("callbacks") or {}).get("export") or {}).get("merge_lora", True))
    out_dir = Path(out_dir) if out_dir is not None else ckpt_path.with_suffix(".hf")
    policy = load_policy(spec)
    weights = {k.removeprefix(POLICY_PREFIX): v for k, v in checkpoint["state_dict"].items()
               if k.startswith(POLICY_PREFIX)}
    policy.load_state_dict(weights, strict=True)
    return export_hf(policy, load_processor(spec), out_dir, merge_lora=merge_lora)


def main(argv: list[str] | None = None) -> None:
    """``python -m museg_lit.export CKPT [OUT] [--keep-adapter]``: the checkpoint's policy as a
    Hugging Face directory (default ``OUT``: ``<ckpt without .ckpt>.hf``), from the checkpoint alone."""
    import argparse

    from museg_lit.errors import user_errors

    parser = argparse.ArgumentParser(prog="python -m museg_lit.export", description=main.__doc__)
    parser.add_argument("checkpoint", help="a Lightning checkpoint of a training run (step_*.ckpt)")
    parser.add_argument("out", nargs="?", help="output directory (default: next to the checkpoint, .hf)")
    parser.add_argument("--keep-adapter", action="store_true", help="LoRA: save the adapter, do not merge it")
    args = parser.parse_args(argv)
    with user_errors(FileNotFoundError, ExportError):
        out = export_checkpoint(args.checkpoint, out_dir=args.out, merge_lora=False if args.keep_adapter else None)
    print(out)


class ExportCallback(L.Callback):
    """At the end of training, export the policy to ``dirpath`` (all ranks gather; rank 0 writes)."""

    def __init__(self, dirpath: str, merge_lora: bool = True):
        self.dirpath, self.merge_lora = dirpath, merge_lora

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        export_module(pl_module, self.dirpath, merge_lora=self.merge_lora, is_global_zero=trainer.is_global_zero)
        trainer.strategy.barrier("ExportCallback")


if __name__ == "__main__":
    main()
