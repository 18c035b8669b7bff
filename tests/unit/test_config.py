"""Config tier: every experiment composes, every group instantiates, typos are errors."""

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from museg_lit.config import CONF_DIR, compose
from museg_lit.models.factory import ModelSpec
from museg_lit.rewards.schedule import RewardSchedule
from museg_lit.rl.config import AlgoConfig, RolloutConfig
from museg_lit.sft import SFTConfig

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def test_default_is_tiny_on_synthetic(tmp_path):
    cfg = compose([f"paths.root_dir={tmp_path}"])
    assert cfg.model.tiny and cfg.data.synthetic is not None
    assert cfg.trainer.accelerator == "auto"
    assert cfg.logger.mlflow.tracking_uri == f"sqlite:///{tmp_path}/logs/mlflow.db"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(experiment, tmp_path):
    cfg = compose([f"+experiment={experiment}", "model=tiny", "data=synthetic", f"paths.root_dir={tmp_path}"])
    assert isinstance(instantiate(cfg.model), ModelSpec)
    assert isinstance(instantiate(cfg.reward), RewardSchedule)
    assert isinstance(instantiate(cfg.algo), SFTConfig if experiment.endswith("_sft") else AlgoConfig)
    assert isinstance(instantiate(cfg.rollout), RolloutConfig)
    dm = instantiate(cfg.data)
    assert dm.frames.fps == 2.0
    instantiate(cfg.optim.optimizer)
    trainer = instantiate(cfg.trainer, logger=False)
    # the paper recipes run one epoch; the learning proof cycles its small generated set for max_steps
    assert trainer.max_epochs == (-1 if experiment.startswith("synthetic_") else 1)


@pytest.mark.parametrize(
    ("experiment", "template", "rewards"),
    [
        ("stage1", "frame_selection_thinking", {"format", "segment_matching"}),
        ("stage2", "frame_selection_thinking_n_timestamp", {"format_no_timestamp", "segment_matching"}),
    ],
)
def test_museg_recipe_values(experiment, template, rewards, tmp_path):
    cfg = compose([f"+experiment={experiment}", f"paths.root_dir={tmp_path}"])
    assert cfg.model.name == "qwen2.5-vl-7b"
    assert cfg.data.template == template
    assert set(cfg.reward.phases.main.weights) == rewards
    assert all(w == 1.0 for w in cfg.reward.phases.main.weights.values())
    assert cfg.optim.optimizer.lr == 1.5e-6
    assert (cfg.algo.beta, cfg.algo.kl_estimator, cfg.algo.num_iterations) == (0.04, "k3", 1)
    assert (cfg.rollout.num_generations, cfg.rollout.temperature, cfg.rollout.max_new_tokens) == (8, 0.9, 4096)
    # vLLM SamplingParams(temperature, max_tokens) under max_model_len 4096
    assert (cfg.rollout.repetition_penalty, cfg.rollout.top_k, cfg.rollout.top_p) == (1.0, None, 1.0)
    assert cfg.rollout.max_total_tokens == 4096
    f = cfg.data.frames
    assert (f.fps, f.max_frames, f.min_pixels, f.total_pixels) == (2.0, 448, 16 * 28 * 28, 3584 * 28 * 28)
    # 14 prompts per optimizer step whatever the device count; accumulation is derived (builders)
    assert (cfg.data.batch_size, cfg.data.global_batch_size, cfg.trainer.max_epochs) == (1, 14, 1)
    assert cfg.trainer.accumulate_grad_batches is None
    assert cfg.data.segment_policy == "keep"
    assert cfg.trainer.precision == "bf16-mixed" and cfg.model.gradient_checkpointing
    assert Path(cfg.data.annotation_file).name == f"stage_{experiment[-1]}.jsonl"


@pytest.mark.parametrize("extra", [[], ["model=tiny", "data=synthetic"]])
def test_stage2_is_stage1_but_data_template_and_format_reward(extra, tmp_path):
    """conf/experiment/stage2.yaml composes stage1.yaml: every key is stage 1's except stage 2's data
    file, its template (no timestamps cited in the thinking) and its format reward, also on CPU
    (``model=tiny data=synthetic``: the template must still change, the data file stays)."""
    from omegaconf import OmegaConf

    from museg_lit.checkpoint_record import config_changes

    stage1, stage2 = (OmegaConf.to_container(compose([f"+experiment={name}", f"paths.root_dir={tmp_path}", *extra]),
                                             resolve=True) for name in ("stage1", "stage2"))
    changes = {key: (old, new) for key, old, new in config_changes(stage1, stage2)}
    expected = {
        "task_name": ("museg_stage1", "museg_stage2"),
        "logger.mlflow.experiment_name": ("museg_stage1", "museg_stage2"),  # ${task_name}
        "data.template": ("frame_selection_thinking", "frame_selection_thinking_n_timestamp"),
        "reward.phases.main.weights.format": (1.0, None),
        "reward.phases.main.weights.format_no_timestamp": (None, 1.0),
    }
    if not extra:
        expected["data.annotation_file"] = (f"{tmp_path}/data/museg/stage_1.jsonl", f"{tmp_path}/data/museg/stage_2.jsonl")
    assert changes == expected


def test_typo_in_override_is_an_error():
    with pytest.raises(ConfigCompositionException, match="model.typo"):
        compose(["model.typo=1"])


def test_sweepable_weight_key(tmp_path):
    cfg = compose([f"paths.root_dir={tmp_path}", "reward.phases.main.weights.segment_matching=0.5"])
    assert instantiate(cfg.reward).phases[0].weights["segment_matching"] == 0.5


def test_learning_proof_heldout_split_is_the_same_in_training_and_evaluation(tmp_path):
    """The held-out evaluation during training (callbacks=learning_eval) and `python -m museg_lit.eval
    data=synthetic_learning_heldout` generate and read the same split, with the training frames; the
    train split differs only by seed, size and split name."""
    from omegaconf import OmegaConf

    train = compose(["+experiment=synthetic_sft", f"paths.root_dir={tmp_path}"])
    held = compose(["data=synthetic_learning_heldout", f"paths.root_dir={tmp_path}"])
    during = OmegaConf.to_container(train.callbacks.grounding_eval, resolve=True)
    spec = OmegaConf.to_container(held.data.synthetic, resolve=True)
    assert during["synthetic"] == spec
    assert during["annotation_file"] == held.data.annotation_file and during["video_root"] == held.data.video_root
    assert during["frames"] == OmegaConf.to_container(train.data.frames, resolve=True)
    train_spec = OmegaConf.to_container(train.data.synthetic, resolve=True)
    differ = {k for k in spec if spec[k] != train_spec[k]}
    assert differ == {"out_dir", "num_samples", "seed", "split"}


def test_learning_proof_grpo_is_museg_stage1_unchanged(tmp_path):
    cfg = compose(["+experiment=synthetic_grpo", f"paths.root_dir={tmp_path}"])
    stage1 = compose(["+experiment=stage1", f"paths.root_dir={tmp_path}"])
    assert cfg.data.template == stage1.data.template == "frame_selection_thinking"
    assert cfg.reward == stage1.reward  # format + segment_matching, weights 1
    assert cfg.algo == stage1.algo  # k3 KL, beta 0.04, sequence mean, one update per rollout
    assert cfg.model.path == f"{tmp_path}/logs/learning/sft/export" and not cfg.model.tiny
