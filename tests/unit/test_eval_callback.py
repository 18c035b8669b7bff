"""Held-out evaluation during training: the callback's metrics (stubbed generation answering from
the ground truth -> perfect scores), its logging to MLflow inside a real (tiny) Lightning fit, and
the optional `callbacks=with_eval` config."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import MLFlowLogger
from mlflow.tracking import MlflowClient

from museg_lit.config import compose
from museg_lit.data.frames import FrameSpec
from museg_lit.data.synthetic import SyntheticSpec
from museg_lit.evaluation import callback as callback_mod
from museg_lit.evaluation.callback import GroundingEvalCallback
from museg_lit.export import ExportCallback
from museg_lit.tracking import CompletionsTableCallback

FRAMES = FrameSpec(fps=2.0, max_frames=8, min_pixels=3136, max_pixels=3136, total_pixels=None)


@pytest.fixture
def oracle(monkeypatch):
    """Generation stub that answers every question with its sample's ground truth."""
    calls = []

    def answer(model, processor, questions, clips, *, max_new_tokens):
        calls.append(len(questions))
        return [f"<think>t</think><answer>{oracle.truth[q]}</answer>" for q in questions]

    oracle.truth = {}
    monkeypatch.setattr(callback_mod, "generate_answers", answer)
    return calls


def make_callback(tmp_path, **kw) -> GroundingEvalCallback:
    spec = SyntheticSpec(out_dir=str(tmp_path / "val"), num_samples=4, seed=1, split="val", min_duration=4, max_duration=6)
    cb = GroundingEvalCallback(str(spec.jsonl_path), spec.out_dir, frames=FRAMES, synthetic=spec, batch_size=3,
                               template="plain", **kw)
    return cb


def _teach_oracle(cb):
    for dv in cb._split():
        for it in dv.items:
            oracle.truth[cb.benchmark.question(it)] = " ".join(f"{s}-{e}" for s, e in it.groundtruth)


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.policy, self.processor = None, None

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=2)


@pytest.mark.filterwarnings("ignore:The number of training batches")  # log_every_n_steps=50 on purpose
def test_callback_logs_val_metrics_and_timeline_to_mlflow(tmp_path, oracle):
    cb = make_callback(tmp_path, every_n_steps=2, num_timeline=4)
    logger = MLFlowLogger(experiment_name="t", tracking_uri=f"sqlite:///{tmp_path}/m.db",
                          artifact_location=str(tmp_path / "art"))
    trainer = L.Trainer(max_steps=4, logger=logger, callbacks=[cb], enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=50)
    cb.setup(trainer, None, "fit")  # generates the split, so the oracle can learn its answers first
    _teach_oracle(cb)
    trainer.fit(Tiny())
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    history = client.get_metric_history(logger.run_id, "val/m_iou")
    assert [(m.step, m.value) for m in history] == [(2, 1.0), (4, 1.0)]  # steps 2 and 4; end of training = step 4
    metrics = client.get_run(logger.run_id).data.metrics
    assert metrics["val/mean_f1_single"] == 1.0 and metrics["val/mean_f1_multi"] == 1.0
    assert metrics["val/no_prediction"] == 0.0
    pngs = [a.path for a in client.list_artifacts(logger.run_id, "val_timeline")]
    assert pngs == ["val_timeline/step_000002.png", "val_timeline/step_000004.png"]
    assert sum(oracle) == 2 * 4  # 4 held-out samples, evaluated twice; clips decoded once (cached)


def test_with_eval_config_adds_the_callback_to_the_defaults(tmp_path):
    cfg = compose([f"paths.root_dir={tmp_path}", "callbacks=with_eval"])
    objs = [instantiate(c) for c in cfg.callbacks.values()]
    kinds = {type(o) for o in objs}
    assert {CompletionsTableCallback, ExportCallback, GroundingEvalCallback} <= kinds
    cb = next(o for o in objs if isinstance(o, GroundingEvalCallback))
    assert cb.synthetic.split == "val" and cb.synthetic.seed == 1 and cb.max_new_tokens == cfg.rollout.max_new_tokens
