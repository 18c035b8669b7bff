"""MLflow tracking: run parameters, the composed config as an artifact, completion tables, and one
MLflow run per run directory.

Lightning's ``MLFlowLogger`` logs the metrics; this module adds what a researcher needs to compare
runs in the MLflow UI: every composed config key as a param (flattened, ``model.path``), the exact
YAML the run used, the command-line overrides as tags (``override.<key>``; in a Hydra sweep also
``sweep_id``, ``sweep_dir`` and ``job_num``, so a sweep's runs filter and compare side by side; in a
SLURM job ``slurm_job_id`` and, for a sweep's array, ``slurm_array_job``), and
every N steps a table of sampled completions with their rewards.

Resume: the MLflow run id is written to ``<run dir>/mlflow_run_id`` when the run starts (and into
every checkpoint, :mod:`museg_lit.checkpointing`). The same command restarted after a crash finds
the id and passes it to ``MLFlowLogger(run_id=...)``: metrics continue in the same run, whose tags
``resumed_from`` / ``resume_count`` record each restart. Params are logged once; a restart only adds
keys that are new (MLflow refuses to change a logged param).

Concurrency: several processes starting against one SQLite store (a local sweep) would race to
create its tables, the experiment and their runs; :func:`mlflow_store_lock` serialises that step.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run_id"
MAX_TAG_CHARS = 5000  # MLflow's limit on a tag value


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
    """Params = flattened composed config; artifacts = ``config.yaml`` (+ ``overrides.txt``).

    Into a resumed run only the params it does not hold yet are logged (a changed value is skipped
    with a warning: MLflow params are immutable, and the artifacts show the latest config).
    """
    for lg in loggers:
        if not isinstance(lg, MLFlowLogger) or lg.run_id is None:  # no run (a new logger off rank 0)
            continue
        existing = lg.experiment.get_run(lg.run_id).data.params
        params = flatten_config(cfg)
        changed = sorted(k for k, v in params.items() if k in existing and existing[k] != v)
        if changed:
            log.warning("MLflow params already logged with other values are kept: %s", ", ".join(changed[:10]))
        new = {k: v for k, v in params.items() if k not in existing}
        if new:
            lg.log_hyperparams(new)
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


# ---------------------------------------------------------------- one MLflow run per run directory
@contextlib.contextmanager
def mlflow_store_lock(tracking_uri: str | None) -> Iterator[None]:
    """An exclusive lock next to a SQLite store (no-op for other stores, which serialise themselves)."""
    if not tracking_uri or not str(tracking_uri).startswith("sqlite:///"):
        yield
        return
    db = Path(str(tracking_uri).removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def stored_run_id(run_dir: str | Path) -> str | None:
    path = Path(run_dir) / RUN_ID_FILE
    return (path.read_text().strip() or None) if path.is_file() else None


def remember_run_id(run_dir: str | Path, run_id: str) -> None:
    """Write ``<run dir>/mlflow_run_id`` atomically (a kill mid-write leaves the old file or none)."""
    path = Path(run_dir) / RUN_ID_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(run_id + "\n")
    os.replace(tmp, path)


def _hydra_config():
    return HydraConfig.get() if HydraConfig.initialized() else None


def sweep_tags() -> dict[str, str]:
    """``sweep_id`` (the sweep directory's name, a timestamp unless ``hydra.sweep.dir`` was given),
    ``sweep_dir`` and ``job_num`` in a Hydra multirun; empty otherwise."""
    hc = _hydra_config()
    if hc is None or hc.mode != RunMode.MULTIRUN:
        return {}
    return {"sweep_id": Path(str(hc.sweep.dir)).name, "sweep_dir": str(hc.sweep.dir), "job_num": str(hc.job.num)}


def cluster_tags(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Where a SLURM job ran, so that a run in the UI leads to its job (``sacct -j``, the job's
    ``.submitit/<id>`` logs): ``slurm_job_id``, for an array task ``slurm_array_job`` =
    ``<array job id>_<task id>`` (a sweep's jobs share the array id), and ``slurm_restart_count``
    once the job was requeued (preemption / timeout); empty outside SLURM.

    >>> cluster_tags({"SLURM_JOB_ID": "12", "SLURM_ARRAY_JOB_ID": "11", "SLURM_ARRAY_TASK_ID": "1"})
    {'slurm_job_id': '12', 'slurm_array_job': '11_1'}
    """
    env = os.environ if environ is None else environ
    if not env.get("SLURM_JOB_ID"):
        return {}
    tags = {"slurm_job_id": env["SLURM_JOB_ID"]}
    if env.get("SLURM_ARRAY_JOB_ID"):
        tags["slurm_array_job"] = f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    if env.get("SLURM_RESTART_COUNT"):
        tags["slurm_restart_count"] = env["SLURM_RESTART_COUNT"]
    return tags


def run_label(run_dir: str | Path, run_name: str | None = None) -> str:
    """The MLflow run name of a new run: ``<run_name or sweep id>/<job num>`` in a sweep, else the run
    directory's name (which is ``run_name`` when given)."""
    tags = sweep_tags()
    return f"{run_name or tags['sweep_id']}/{tags['job_num']}" if tags else Path(run_dir).name


def build_mlflow_logger(entry: DictConfig, run_dir: str | Path, *, resume: bool,
                        run_name: str | None = None) -> MLFlowLogger:
    """Instantiate the ``MLFlowLogger`` config ``entry`` for this run directory: with the ``run_id`` of
    the run the directory already has (``resume``: continue it), else a new run named by
    :func:`run_label` (when the config leaves ``run_name`` null)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = entry.get("tracking_uri")
    with mlflow_store_lock(uri):  # creating a client creates the store's tables
        run_id = stored_run_id(run_dir) if resume else None
        if run_id is not None:
            try:
                MlflowClient(uri).get_run(run_id)
                return instantiate(entry, run_id=run_id)
            except MlflowException:
                log.warning("%s names MLflow run %s, which %s does not hold: starting a new run",
                            Path(run_dir) / RUN_ID_FILE, run_id, uri)
        if entry.get("run_name"):
            return instantiate(entry)
        return instantiate(entry, run_name=run_label(run_dir, run_name))


def override_tags(overrides: list[str] | None) -> dict[str, str]:
    """``["+a.b=1", "c=x"]`` -> ``{"overrides": "+a.b=1 c=x", "override.a.b": "1", "override.c": "x"}``."""
    if not overrides:
        return {}
    tags = {"overrides": " ".join(overrides)}
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        tags[f"override.{key}"] = value
    return {k: v[:MAX_TAG_CHARS] for k, v in tags.items()}


@rank_zero_only  # only rank 0 holds the MLflow run (a resumed logger knows its run id on every rank)
def start_tracking(loggers: list, cfg: DictConfig, *, run_dir: str | Path, overrides: list[str] | None = None,
                   resumed_from: str | Path | None = None) -> None:
    """Create (or reopen) each MLflow run, remember its id in ``run_dir``, log params, config and tags.

    Runs on rank 0 only; call before ``trainer.fit``.
    """
    for lg in loggers:
        if not isinstance(lg, MLFlowLogger):
            continue
        from mlflow.entities import RunTag

        with mlflow_store_lock(getattr(lg, "_tracking_uri", None)):
            run_id = lg.run_id  # creates the experiment and the run on first access
        remember_run_id(run_dir, run_id)
        client = lg.experiment
        tags = {"run_dir": str(run_dir), **sweep_tags(), **cluster_tags(), **override_tags(overrides)}
        if resumed_from is not None:
            previous = client.get_run(run_id).data.tags.get("resume_count", "0")
            tags.update(resumed_from=str(resumed_from), resume_count=str(int(previous) + 1))
            client.update_run(run_id, status="RUNNING")  # the killed process never closed it
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    log_run_config(loggers, cfg, overrides)
