"""Stage chaining: the exported policy loads back with identical logits and starts stage 2."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

from museg_lit.config import compose
from museg_lit.export import export_hf
from tests.integration.test_training import _overrides, _run, length_variance_reward

pytestmark = pytest.mark.integration


def test_export_roundtrip_and_stage2_start(tmp_path, synthetic_data, tiny_checkpoint):
    cfg = compose(_overrides(tmp_path, synthetic_data, tiny_checkpoint, "trainer.max_steps=1",
                             "optim.optimizer.lr=1e-3", "rollout.max_new_tokens=8", "rollout.num_generations=2"))
    run = _run(cfg, length_variance_reward)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    out = export_hf(run.module.policy, run.module.processor, tmp_path / "export")
    loaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(out, local_files_only=True).eval()
    AutoProcessor.from_pretrained(out, local_files_only=True)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.equal(run.module.policy.eval()(input_ids=ids).logits, loaded(input_ids=ids).logits)
    # stage 2 starts from the export: the spec path points at it and the weights are the trained ones
    cfg2 = compose(["+experiment=stage2", "model=tiny", "data=synthetic", f"paths.root_dir={tmp_path}",
                    f"model.path={out}", "model.tiny=false"])
    run2 = _run(cfg2, length_variance_reward)
    run2.module.configure_model()
    with torch.no_grad():
        assert torch.equal(run2.module.policy.eval()(input_ids=ids).logits, loaded(input_ids=ids).logits)
    assert set(run2.module.reward.phases[0].weights) == {"format_no_timestamp", "segment_matching"}


def test_lora_export_merges_or_keeps_adapter(tmp_path, synthetic_data, tiny_checkpoint):
    cfg = compose(_overrides(tmp_path, synthetic_data, tiny_checkpoint, "trainer.max_steps=2", "optim.optimizer.lr=1e-2",
                             "rollout.max_new_tokens=8", "rollout.num_generations=2", "model.lora.enabled=true",
                             "model.lora.r=4"))
    run = _run(cfg, length_variance_reward)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    policy = run.module.policy.eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    merged = export_hf(policy, run.module.processor, tmp_path / "merged", merge_lora=True)
    loaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(merged, local_files_only=True).eval()
    with torch.no_grad():
        assert torch.allclose(policy(input_ids=ids).logits, loaded(input_ids=ids).logits, atol=1e-5)
    assert hasattr(policy, "peft_config")  # merging worked on a copy; training model keeps its adapter
    adapter = export_hf(policy, run.module.processor, tmp_path / "adapter", merge_lora=False)
    assert (adapter / "adapter_config.json").exists() and not (adapter / "model.safetensors").exists()
