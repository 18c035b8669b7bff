"""Training entry point: ``python -m museg_lit.train [+experiment=stage1] [overrides]``.

Composes ``conf/train.yaml``, builds the run (:mod:`museg_lit.builders`), starts MLflow tracking
(:mod:`museg_lit.tracking`) and fits, continuing from the newest complete checkpoint of the run
directory when there is one: the same command restarted after a crash resumes
(:mod:`museg_lit.checkpointing`); ``resume=<ckpt>`` alone continues that checkpoint's run with its
stored config (:mod:`museg_lit.checkpoint_config`). Returns ``tracked_metric`` for Hydra sweepers."""

from __future__ import annotations

import sys
import warnings

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from museg_lit.builders import build_training
from museg_lit.checkpoint_config import resumed_config
from museg_lit.checkpointing import CheckpointSaveError, ResumeError, RunFinished
from museg_lit.data.annotations import AnnotationError
from museg_lit.errors import user_errors
from museg_lit.schema import check_config
from museg_lit.tracking import start_tracking

# the frozen reference model is deliberately in eval mode; the module moves batches itself on purpose
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
warnings.filterwarnings("ignore", message=r"You have overridden `transfer_batch_to_device`")
# conf/hydra/launcher/submitit_local.yaml shares its name with the plugin's schema, which validates it
warnings.filterwarnings("ignore", message=r"'hydra/launcher/submitit_local' is validated against ConfigStore schema")


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None
    # user errors: one line, no traceback (config values refused by the typed configs included)
    try:
        with user_errors(FileNotFoundError, AnnotationError, ResumeError):
            cfg = resumed_config(cfg, overrides)  # resume=<ckpt> alone: the checkpoint's config + overrides
            check_config(cfg)  # first: the seed itself is a checked value
            L.seed_everything(cfg.seed, workers=True)
            run = build_training(cfg)
    except RunFinished as done:  # the same command after the run finished: say so, exit 0
        print(f"museg_lit: {done}", file=sys.stderr, flush=True)
        return None
    start_tracking(run.trainer.loggers, cfg, run_dir=cfg.paths.output_dir, overrides=overrides,
                   resumed_from=run.ckpt_path)
    # the data module reads its annotations and checks its videos in setup, before the model loads;
    # a failed final checkpoint save and the skip budget (DataError) end the fit with one line too
    with user_errors(AnnotationError, CheckpointSaveError):
        run.trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=run.ckpt_path)
    value = run.trainer.callback_metrics.get(cfg.tracked_metric)
    return None if value is None else float(value)


if __name__ == "__main__":
    main()
