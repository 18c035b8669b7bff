"""MLflow tracking: run parameters, the composed config as an artifact, completion tables.

Lightning's ``MLFlowLogger`` logs the metrics; this module adds what a researcher needs to compare
runs in the MLflow UI: every composed config key as a param (flattened, ``model.path``), the exact
YAML the run used, and every N steps a table of sampled completions with their rewards.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig, OmegaConf


def flatten_config(cfg: DictConfig | dict, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": "1", "c": "[1, 2]"}`` (lists stay one value)."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    flat: dict[str, str] = {}
    for key, value in container.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def mlflow_loggers(trainer: L.Trainer) -> list[MLFlowLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)]


def log_run_config(loggers: list, cfg: DictConfig, overrides: list[str] | None = None) -> None:
    """Params = flattened composed config; artifacts = ``config.yaml`` (+ ``overrides.txt``)."""
    for lg in loggers:
        if not isinstance(lg, MLFlowLogger):
            continue
        lg.log_hyperparams(flatten_config(cfg))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.yaml"
            path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
            lg.experiment.log_artifact(lg.run_id, str(path))
            if overrides is not None:
                (Path(tmp) / "overrides.txt").write_text("\n".join(overrides) + "\n")
                lg.experiment.log_artifact(lg.run_id, str(Path(tmp) / "overrides.txt"))


class CompletionsTableCallback(L.Callback):
    """Every ``every_n_steps`` optimizer steps, log ``pl_module.last_completions`` as an MLflow table
    (``completions/step_000010.json``; the UI's "Evaluation" / artifact view shows it)."""

    def __init__(self, every_n_steps: int = 10):
        self.every_n_steps = every_n_steps
        self._last_logged = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        rows = getattr(pl_module, "last_completions", None)
        if not rows or step == self._last_logged or (step % self.every_n_steps and step != 1):
            return
        self._last_logged = step
        table = {key: [row.get(key) for row in rows] for key in rows[0]}
        for lg in mlflow_loggers(trainer):
            lg.experiment.log_table(run_id=lg.run_id, data=table, artifact_file=f"completions/step_{step:06d}.json")
