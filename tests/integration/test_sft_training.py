"""SFT warm start through the real entry path: a few teacher-forced steps lower the answer loss."""

from __future__ import annotations

import pytest
import torch

from museg_lit.builders import build_training
from museg_lit.config import compose
from museg_lit.sft.loss import answer_logprobs, masked_nll
from museg_lit.sft.module import SFTModule

pytestmark = pytest.mark.integration


def test_a_few_sft_steps_lower_the_answer_loss(tmp_path, synthetic_data, tiny_checkpoint):
    cfg = compose([
        f"paths.root_dir={tmp_path}", f"model.path={tiny_checkpoint}", "algo=sft",
        f"data.annotation_file={synthetic_data}/train.jsonl", f"data.video_root={synthetic_data}",
        "data.synthetic=null", "data.batch_size=4", "data.shuffle=false", "logger=none", "callbacks=none",
        "trainer.enable_progress_bar=false", "trainer.max_steps=12", "optim.optimizer.lr=1e-3",
    ])
    run = build_training(cfg)
    assert isinstance(run.module, SFTModule)
    run.datamodule.setup("fit")
    batch = next(iter(run.datamodule.train_dataloader()))  # the first 4 samples, every time
    run.module.configure_model()

    def loss() -> float:
        with torch.no_grad():
            policy = run.module.policy.eval()
            value = masked_nll(answer_logprobs(policy, batch.inputs, batch.answer_ids, batch.answer_mask),
                               batch.answer_mask)
            policy.train()
            return float(value)

    before = loss()
    run.trainer.fit(run.module, datamodule=run.datamodule)
    after = loss()
    assert after < before - 2.0, (before, after)  # nats per answer token: learnt, not noise
    metrics = run.trainer.callback_metrics
    assert {"sft/loss", "sft/timestamp_loss", "sft/answer_tokens"} <= set(metrics)
    assert float(metrics["sft/timestamp_loss"]) > 0
