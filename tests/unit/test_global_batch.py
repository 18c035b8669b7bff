"""Global batch = MUSEG's 14 prompts per optimizer step, whatever the device count:
gradient accumulation is derived from ``data.global_batch_size`` (museg_lit.builders)."""

from __future__ import annotations

import pytest

from museg_lit.builders import accumulation_for, build_training
from museg_lit.config import compose
from museg_lit.errors import ConfigError


def test_accumulation_hand_computed():
    assert accumulation_for(14, 1, 7) == 2  # MUSEG: 7 GPUs x 1 prompt x 2
    assert accumulation_for(14, 1, 1) == 14  # one GPU: 14 micro-batches per step
    assert accumulation_for(14, 2, 7) == 1
    assert accumulation_for(16, 1, 8, generation_split=2) == 4  # 4 replicas of 2 ranks sharing prompts
    with pytest.raises(ConfigError, match="data.global_batch_size=14 is not a multiple of 8"):
        accumulation_for(14, 1, 8)


def _stage1(tmp_path, tiny_checkpoint, synthetic_data, *extra):
    return compose(["+experiment=stage1", "model=tiny", "data=synthetic", f"paths.root_dir={tmp_path}",
                    f"model.path={tiny_checkpoint}", f"data.annotation_file={synthetic_data}/train.jsonl",
                    f"data.video_root={synthetic_data}", "data.synthetic=null", "logger=none", "callbacks=none",
                    "trainer.precision=32-true", *extra])


def test_stage1_on_one_device_makes_14_prompts_per_step(tmp_path, tiny_checkpoint, synthetic_data):
    cfg = _stage1(tmp_path, tiny_checkpoint, synthetic_data)
    run = build_training(cfg)
    assert run.trainer.world_size == 1 and run.trainer.accumulate_grad_batches == 14
    assert cfg.trainer.accumulate_grad_batches == 14  # recorded in the config MLflow logs
    assert run.datamodule.batch_size * run.trainer.accumulate_grad_batches * run.trainer.world_size == 14


def test_a_contradicting_accumulation_is_an_error(tmp_path, tiny_checkpoint, synthetic_data):
    cfg = _stage1(tmp_path, tiny_checkpoint, synthetic_data, "trainer.accumulate_grad_batches=2")
    with pytest.raises(ConfigError, match="contradicts data.global_batch_size=14"):
        build_training(cfg)


def test_without_a_global_batch_the_accumulation_stands(tmp_path, tiny_checkpoint, synthetic_data):
    cfg = _stage1(tmp_path, tiny_checkpoint, synthetic_data, "data.global_batch_size=null",
                  "trainer.accumulate_grad_batches=3")
    assert build_training(cfg).trainer.accumulate_grad_batches == 3


def test_shared_prefix_with_flash_attention_is_a_config_error(tmp_path, tiny_checkpoint, synthetic_data):
    """The packed log-prob pass needs a block mask; flash-attn kernels take none (sdpa / eager do)."""
    cfg = _stage1(tmp_path, tiny_checkpoint, synthetic_data, "model.attn_implementation=flash_attention_2")
    with pytest.raises(ConfigError, match="rollout.share_prefix=false"):
        build_training(cfg)
