"""Typed config checks: every numeric and enum-like value is checked for type and range at start,
and a bad one is refused with its key named (``rollout.num_generations='abc': expected an integer``).

A schema is a dataclass whose fields carry their bounds (:func:`museg_lit.settings.setting`). Two uses:

* :func:`museg_lit.settings.check_fields` in a settings dataclass's ``__post_init__`` (``AlgoConfig``,
  ``RolloutConfig``, ``FrameSpec``): the object checks itself however it is built, and an int
  given to a float field is stored as a float.
* :func:`check_config` on a composed config, before anything is built: the groups Hydra hands to
  third-party classes (``lightning.Trainer``, ``torch.optim.AdamW``) and to the data module are
  checked against the schemas below (only the keys present are checked; Hydra's struct mode
  already refuses unknown keys).

Types are exact (see :mod:`museg_lit.settings`, where the field checks live so that the settings
classes this module checks can use them without importing it back).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from museg_lit.data.annotations import ANNOTATION_FORMATS, SEGMENT_POLICIES
from museg_lit.data.frames import FrameSpec
from museg_lit.errors import ConfigError
from museg_lit.prompts import TEMPLATES
from museg_lit.settings import check_group, check_value, setting

__all__ = ["CheckpointSchema", "DataSchema", "EvalSchema", "GroundThenAnswerSchema", "check_eval_config", "OptimizerSchema", "RunSchema", "SchedulerSchema", "TrainerSchema",
           "check_config"]


# ---------------------------------------------------------------- schemas of groups built by others
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true", "transformer-engine")


@dataclass(frozen=True)
class DataSchema:
    """``conf/data``: the data module's arguments (see ``GroundingDataModule``)."""

    annotation_file: str = setting("")
    video_root: str = setting("")
    # "etbench": E.T. Bench's own fixed instruction (evaluation only)
    template: str = setting("frame_selection_thinking", choices=(*TEMPLATES, "etbench"))
    batch_size: int = setting(1, ge=1)
    global_batch_size: int | None = setting(None, ge=1)
    num_workers: int = setting(0, ge=0)
    on_error: str = setting("skip", choices=("skip", "raise"))
    segment_policy: str = setting("clip", choices=SEGMENT_POLICIES)
    shuffle: bool = setting(True)
    max_samples: int | None = setting(None, ge=1)
    max_skip_fraction: float = setting(0.1, ge=0.0, le=1.0)
    system_prompt: str | None = setting(None)
    annotation_format: str = setting("auto", choices=ANNOTATION_FORMATS)


@dataclass(frozen=True)
class TrainerSchema:
    """``conf/trainer``: the ``lightning.Trainer`` arguments this project sets."""

    max_steps: int = setting(-1, ge=-1)
    max_epochs: int | None = setting(None, ge=-1)
    accumulate_grad_batches: int | None = setting(None, ge=1)
    gradient_clip_val: float | None = setting(None, ge=0.0)
    log_every_n_steps: int = setting(1, ge=1)
    num_nodes: int = setting(1, ge=1)
    num_sanity_val_steps: int = setting(0, ge=-1)
    precision: str | int = setting("32-true", choices=PRECISIONS + (32, 16, 64))
    val_check_interval: int | float | None = setting(None, gt=0)


@dataclass(frozen=True)
class OptimizerSchema:
    """``optim.optimizer``: AdamW's (and most optimizers') numeric settings."""

    lr: float = setting(1e-6, gt=0.0)
    betas: list[float] = setting(None)
    eps: float = setting(1e-8, gt=0.0)
    weight_decay: float = setting(0.0, ge=0.0)
    momentum: float = setting(0.0, ge=0.0)


@dataclass(frozen=True)
class SchedulerSchema:
    """``optim.scheduler``: warm-up and decay of the learning rate."""

    warmup_steps: int = setting(0, ge=0)


@dataclass(frozen=True)
class CheckpointSchema:
    """``callbacks.checkpoint``: how often and how many checkpoints are kept."""

    dirpath: str = setting("")
    every_n_train_steps: int = setting(100, ge=1)
    keep_last: int = setting(2, ge=-1)
    save_final: bool = setting(True)
    export_hf: bool = setting(False)
    fsync: bool = setting(True)


@dataclass(frozen=True)
class RunSchema:
    """Top-level keys of ``conf/train.yaml``."""

    seed: int = setting(42, ge=0)
    run_name: str | None = setting(None)
    resume: str | bool | None = setting("auto")
    task_name: str = setting("train")


def _betas(values: Mapping | None) -> None:
    betas = (values or {}).get("betas")
    if betas is None:
        return
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ConfigError(f"optim.optimizer.betas={list(betas)!r}: expected two numbers in [0, 1)")


def _group(cfg: Mapping, *path: str) -> Mapping | None:
    node: Any = cfg
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else None


def check_config(cfg: Mapping) -> None:
    """Check a composed training config's groups (plain dicts or ``DictConfig``)."""
    from museg_lit.models.factory import ModelSpec  # noqa: PLC0415
    from museg_lit.rl.config import AlgoConfig, RolloutConfig  # noqa: PLC0415
    from museg_lit.sft.config import SFTConfig  # noqa: PLC0415

    check_group(cfg, RunSchema, "")
    check_group(_group(cfg, "model"), ModelSpec, "model")
    check_group(_group(cfg, "data"), DataSchema, "data")
    check_group(_group(cfg, "data", "frames"), FrameSpec, "data.frames")
    check_group(_group(cfg, "trainer"), TrainerSchema, "trainer")
    check_group(_group(cfg, "optim", "optimizer"), OptimizerSchema, "optim.optimizer")
    _betas(_group(cfg, "optim", "optimizer"))
    check_group(_group(cfg, "optim", "scheduler"), SchedulerSchema, "optim.scheduler")
    check_group(_group(cfg, "callbacks", "checkpoint"), CheckpointSchema, "callbacks.checkpoint")
    algo = _group(cfg, "algo")
    check_group(algo, SFTConfig if str((algo or {}).get("_target_", "")).endswith("SFTConfig") else AlgoConfig, "algo")
    check_group(_group(cfg, "rollout"), RolloutConfig, "rollout")


@dataclass(frozen=True)
class EvalSchema:
    """Top-level keys of ``conf/eval.yaml``."""

    batch_size: int = setting(8, ge=1)
    max_new_tokens: int = setting(512, ge=1)
    device: str = setting("auto")
    resume: bool = setting(True)
    task: str | None = setting(None, choices=("tvg", "tal", "ground_then_answer"))
    video_ablation: str = setting("none", choices=("none", "blank"))


@dataclass(frozen=True)
class GroundThenAnswerSchema:
    """``gta`` of ``conf/eval.yaml`` (``task=ground_then_answer``)."""

    margin_s: float = setting(2.0, ge=0.0)
    min_window_s: float = setting(1.0, gt=0.0)
    window_note: bool = setting(True)
    grounding_template: str = setting("frame_selection_thinking", choices=tuple(TEMPLATES))
    grounding_max_new_tokens: int = setting(512, ge=1)
    answer_max_new_tokens: int = setting(16, ge=1)
    num_timeline: int = setting(12, ge=0)


def _check_qa_task(cfg: Mapping) -> None:
    """``task=ground_then_answer`` needs a multiple-choice QA set (``data.qa_format``) and a QA set needs it."""
    from museg_lit.evaluation.qa.loaders import QA_FORMATS  # noqa: PLC0415

    data = _group(cfg, "data") or {}
    qa_format, task = data.get("qa_format"), cfg.get("task")
    if qa_format is not None:
        check_value("data.qa_format", qa_format, str, {"choices": tuple(QA_FORMATS)})
    if task == "ground_then_answer" and qa_format is None:
        raise ConfigError("task=ground_then_answer: data is not a multiple-choice QA set (no data.qa_format); "
                          "use data=video_mme, longvideobench, mlvu or synthetic_qa")
    if qa_format is not None and task != "ground_then_answer":
        raise ConfigError(f"task={task if task is not None else 'null'}: data.qa_format={qa_format} is a multiple-choice "
                          "QA set; pass task=ground_then_answer")
    if task == "ground_then_answer":
        check_group(_group(cfg, "gta"), GroundThenAnswerSchema, "gta")
        if cfg.get("video_ablation", "none") != "none":
            raise ConfigError("video_ablation: not supported with task=ground_then_answer; leave it at none")


def check_eval_config(cfg: Mapping) -> None:
    """Check a composed evaluation config (``python -m museg_lit.eval``)."""
    from museg_lit.models.factory import ModelSpec  # noqa: PLC0415

    check_group(cfg, EvalSchema, "")
    check_group(_group(cfg, "model"), ModelSpec, "model")
    check_group(_group(cfg, "data", "frames"), FrameSpec, "data.frames")
    check_group(_group(cfg, "data"), DataSchema, "data")
    _check_qa_task(cfg)
