"""Reward schedule (phases, weights, custom rewards) and the verbatim MUSEG templates."""

import json

import pytest
import torch

from museg_lit.prompts import TEMPLATES, render_question, video_messages
from museg_lit.rewards.schedule import RewardSchedule

GOOD = "<think>at 1.0 and 2.0 it shows</think><answer>1.00-2.00</answer>"


def test_templates_are_verbatim(museg_data_dir):
    released = json.loads((museg_data_dir / "templates.json").read_text())
    for name in ("frame_selection_thinking", "frame_selection_thinking_n_timestamp"):
        assert TEMPLATES[name] == released[name]


def test_render_question_keeps_braces():
    assert render_question("a {b} c", "plain") == "a {b} c"
    assert render_question("Q?", "frame_selection_thinking").startswith("Q? First, output reasoning")
    with pytest.raises(KeyError, match="unknown question template"):
        render_question("Q", "nope")


def test_video_messages_layout():
    msgs = video_messages("Q", system_prompt="S")
    assert msgs[0]["role"] == "system" and msgs[1]["content"][0] == {"type": "video"}


def test_weighted_total_and_phase_switch():
    schedule = RewardSchedule(
        {
            "warm": {"start_step": 0, "weights": {"format": 1.0}},
            "main": {"start_step": 10, "weights": {"format": 0.5, "segment_matching": 2.0}},
        }
    )
    # step 0: only format (1.0 for a well-formed answer whose numbers appear in the thinking)
    out = schedule.compute(0, [GOOD], [[[1.0, 2.0]]])
    assert out.phase.name == "warm" and out.total.tolist() == [1.0]
    # step 10: 0.5 * format(1.0) + 2.0 * segment_matching(global ~1 + local 1 ~= 2) ~= 4.5
    out = schedule.compute(10, [GOOD], [[[1.0, 2.0]]])
    assert out.phase.name == "main"
    assert out.total.item() == pytest.approx(0.5 + 2.0 * 2.0, abs=1e-4)
    assert set(out.per_function) == {"format", "segment_matching"}


def length_reward(completions, solution, **columns):
    return [float(len(c)) for c in completions]


def test_custom_reward_by_dotted_path_and_callable():
    by_path = RewardSchedule({"main": {"weights": {"len": 1.0}}}, custom={"len": f"{__name__}:length_reward"})
    assert by_path.compute(0, ["abc"], [[[0, 1]]]).total.tolist() == [3.0]
    direct = RewardSchedule({"main": {"weights": {"len": 2.0}}}, custom={"len": length_reward})
    assert direct.compute(0, ["ab"], [[[0, 1]]]).total.tolist() == [4.0]


def test_unknown_reward_names_config_key():
    with pytest.raises(ValueError, match=r"reward.phases.main.weights.nope"):
        RewardSchedule({"main": {"weights": {"nope": 1.0}}})


def test_first_phase_must_start_at_zero():
    with pytest.raises(ValueError, match="must start at step 0"):
        RewardSchedule({"late": {"start_step": 5, "weights": {"format": 1.0}}})


def test_reward_shape_checked():
    bad = RewardSchedule({"main": {"weights": {"b": 1.0}}}, custom={"b": lambda c, s, **k: [1.0, 2.0]})
    with pytest.raises(ValueError, match="returned"):
        bad.compute(0, ["x"], [[[0, 1]]])
    assert isinstance(RewardSchedule({"main": {"weights": {"format": 1.0}}}).compute(0, ["x"], [[[0, 1]]]).total, torch.Tensor)
