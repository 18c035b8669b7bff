"""Evaluation entry point: ``python -m museg_lit.eval data=charades_sta model=qwen2_5_vl_7b model.path=DIR``.

Composes ``conf/eval.yaml``; checks annotations, videos and the resume state *before* loading any
weights; runs :class:`museg_lit.evaluation.runner.EvalRunner` (MUSEG's protocol, resumable), or with
``task=ground_then_answer`` on a multiple-choice QA set
:class:`museg_lit.evaluation.qa.runner.GroundThenAnswerRunner` (config ``gta``), and logs params,
metrics, predictions and pictures to one MLflow run. Returns the headline metric (x100 in
the README table: ``m_iou`` for single-segment sets, ``mean_f1_multi`` for multi-segment ones).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from museg_lit.data.annotations import AnnotationError
from museg_lit.data.synthetic import generate_synthetic_dataset
from museg_lit.distributed.allocation import apply_cpu_allocation
from museg_lit.errors import user_errors
from museg_lit.evaluation.runner import load_eval_model, log_eval_run
from museg_lit.schema import check_eval_config
from museg_lit.tracking import log_run_config


@hydra.main(version_base="1.3", config_path="../../conf", config_name="eval")
def main(cfg: DictConfig) -> float:
    with user_errors(FileNotFoundError, AnnotationError, NotImplementedError, ValueError):  # one line, exit 2
        check_eval_config(cfg)
        apply_cpu_allocation()  # a launcher's job uses the CPUs it was given
        if cfg.data.get("synthetic") and not Path(cfg.data.annotation_file).exists():
            synthetic = instantiate(cfg.data.synthetic)  # a generated split, written once
            synthetic.generate() if hasattr(synthetic, "generate") else generate_synthetic_dataset(synthetic)
        spec = instantiate(cfg.model)
        runner = instantiate(cfg.gta if cfg.task == "ground_then_answer" else cfg.runner)  # evaluation.qa.runner
        runner.prepare(model_id=str(spec.path or spec.name))  # missing videos fail here, at once
        model, processor = load_eval_model(spec, cfg.device)
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg and "_target_" in lg]
    log_run_config(loggers, cfg, list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None)
    result = runner.run(model, processor, model_id=str(spec.path or spec.name))
    log_eval_run(loggers, result)
    value = float(result.metrics[result.headline])
    print(f"{result.dataset}: {result.headline} = {value:.4f} (x100: {100 * value:.1f}); files in {result.output_dir}")
    return value


if __name__ == "__main__":
    main()
