"""GroundingDataset / GroundingDataModule data side: the clip cache, skipped videos, annotation
formats and their counts, and the ``cache_dir`` key of every data config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: shared video helpers

from museg_lit.config import CONF_DIR, compose  # noqa: E402
from museg_lit.data import cache as cache_mod  # noqa: E402
from museg_lit.data.annotations import GroundingSample  # noqa: E402
from museg_lit.data.datamodule import FrameSpec, GroundingDataModule, GroundingDataset  # noqa: E402
from museg_lit.errors import DataError  # noqa: E402
from videos import make_video  # noqa: E402

FRAMES = FrameSpec(
    fps=2.0, min_frames=4, max_frames=16, min_pixels=28 * 28, max_pixels=56 * 56, timeout_s=30.0
)
DATA_CONFIGS = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))


@pytest.fixture(scope="module")
def video_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    make_video(root / "ok.mp4", fps=10, seconds=3.0)
    (root / "broken.mp4").write_bytes(b"\x00" * 100)
    return root


def _sample(video: str, idx: str = "0") -> GroundingSample:
    return GroundingSample(
        idx=idx, problem="q", solution=[[0.5, 1.0]], video=video, task="tvg", source=f"a.jsonl:{idx}"
    )


def test_framespec_cache_is_off_by_default():
    assert FrameSpec().cache_dir is None


def test_dataset_decodes_once_then_reads_the_cache(video_root, tmp_path):
    cache_mod._CACHES.clear()
    frames = FrameSpec(**{**FRAMES.__dict__, "cache_dir": str(tmp_path / "clips")})
    ds = GroundingDataset([_sample("ok.mp4")], str(video_root), frames, on_error="skip")
    uncached = GroundingDataset([_sample("ok.mp4")], str(video_root), FRAMES, on_error="skip")[0]["clip"]
    first, second = ds[0], ds[0]
    assert torch.equal(first["clip"].frames, uncached.frames) and torch.equal(
        second["clip"].frames, uncached.frames
    )
    assert second["clip"].timestamps == uncached.timestamps
    stats = cache_mod.get_cache(frames.cache_dir).stats
    assert (stats.misses, stats.hits) == (1, 1)
    assert len(list((tmp_path / "clips").rglob("*.clip"))) == 1


def test_broken_and_escaping_videos_are_skipped_or_raised(video_root, tmp_path):
    frames = FrameSpec(**{**FRAMES.__dict__, "cache_dir": str(tmp_path / "clips")})
    samples = [_sample("broken.mp4", "1"), _sample("../../etc/passwd", "2"), _sample("missing.mp4", "3")]
    ds = GroundingDataset(samples, str(video_root), frames, on_error="skip")
    items = [ds[i] for i in range(len(ds))]
    assert all(it["clip"] is None for it in items)
    assert "broken.mp4" in items[0]["error"] and "escapes the video root" in items[1]["error"]
    assert "does not exist" in items[2]["error"]
    # nothing loads: the sample and all 8 replacement draws are counted as skipped
    assert [it["drawn"] for it in items] == [9, 9, 9] and all(len(it["skipped"]) == 9 for it in items)
    assert not list((tmp_path / "clips").rglob("*.clip"))  # failures are never cached
    with pytest.raises(DataError, match=r"broken.mp4: not a readable media file .*data.on_error=raise"):
        GroundingDataset(samples, str(video_root), frames, on_error="raise")[0]


def test_a_failed_sample_is_replaced_by_a_deterministic_draw(video_root):
    """A broken video's sample is replaced (the batch stays full), the same way in every process."""
    samples = [_sample("broken.mp4", "0"), *[_sample("ok.mp4", str(i)) for i in range(1, 6)]]
    ds = GroundingDataset(samples, str(video_root), FRAMES, on_error="skip")
    item = ds[0]
    assert item["clip"] is not None and item["sample"].idx != "0"
    assert item["drawn"] == 2 and [reason for _, reason in item["skipped"]] == [ds.load(0)["error"]]
    again = GroundingDataset(samples, str(video_root), FRAMES, on_error="skip")[0]
    assert again["sample"].idx == item["sample"].idx
    assert ds[3]["drawn"] == 1 and ds[3]["skipped"] == []


def test_datamodule_loads_et_bench_and_reports_counts(video_root, tmp_path):
    records = [
        {
            "idx": 0,
            "task": "tvg",
            "source": "s",
            "video": "ok.mp4",
            "duration": 3.0,
            "tgt": [0.5, 4.0],
            "q": "q0",
        },
        {
            "idx": 1,
            "task": "tal",
            "source": "s",
            "video": "ok.mp4",
            "duration": 3.0,
            "tgt": [[0, 1], [2, 3]],
            "q": "q1",
        },
        {
            "idx": 2,
            "task": "rvq",
            "source": "s",
            "video": "ok.mp4",
            "duration": 3.0,
            "p": 0,
            "o": ["a", "b"],
            "q": "q2",
        },
    ]
    ann = tmp_path / "et.json"
    ann.write_text(json.dumps(records))
    dm = GroundingDataModule(
        str(ann), str(video_root), frames=FRAMES, annotation_format="et_bench", tasks=["tvg", "tal"]
    )
    dm.setup()
    assert [s.idx for s in dm.train_set.samples] == ["tvg/s/0", "tal/s/1"]
    assert dm.report.as_metrics() == {
        "data/loaded": 2.0,
        "data/clipped": 1.0,
        "data/kept_invalid": 0.0,
        "data/dropped": 0.0,
        "data/filtered": 1.0,
        "data/filtered/task_not_selected": 1.0,
    }
    assert dm.train_set[0]["clip"].frames.shape[0] == 6


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_every_data_config_has_cache_dir_off(name, tmp_path):
    cfg = compose([f"data={name}", f"paths.root_dir={tmp_path}"])
    if name.startswith("synthetic_learning"):  # the learning proof re-reads its small clips many times
        assert cfg.data.frames.cache_dir == f"{tmp_path}/.cache/clips"
    else:
        assert cfg.data.frames.cache_dir is None
    cfg = compose([f"data={name}", f"paths.root_dir={tmp_path}", f"data.frames.cache_dir={tmp_path}/clips"])
    frames = instantiate(cfg.data.frames)
    assert isinstance(frames, FrameSpec) and frames.cache_dir == f"{tmp_path}/clips"
    if "_target_" in cfg.data and cfg.data.synthetic is None:  # real datasets: instantiation reads no files
        dm = instantiate(cfg.data)
        assert dm.frames.cache_dir == f"{tmp_path}/clips"


def test_collator_skips_prompts_that_leave_no_room(video_root, tiny_checkpoint, caplog):
    from transformers import Qwen2_5_VLProcessor

    from museg_lit.data.datamodule import PromptCollator

    processor = Qwen2_5_VLProcessor.from_pretrained(tiny_checkpoint, local_files_only=True)
    ds = GroundingDataset([_sample("ok.mp4", "0"), _sample("ok.mp4", "1")], str(video_root), FRAMES, on_error="skip")
    items = [ds[0], {**ds[1], "sample": GroundingSample(idx="1", problem="a much longer question " * 20,
                                                        solution=[[0.5, 1.0]], video="ok.mp4", task="tvg",
                                                        source="a.jsonl:1")}]
    lengths = PromptCollator(processor, "frame_selection_thinking")(items).inputs["attention_mask"].sum(1).tolist()
    assert lengths[0] < lengths[1]
    # a cap between the two lengths: the long prompt leaves no room and is skipped, counted, named
    batch = PromptCollator(processor, "frame_selection_thinking", max_total_tokens=lengths[1])(items)
    assert [s.idx for s in batch.samples] == ["0"]
    assert batch.inputs["input_ids"].shape == (1, lengths[0])
    ((source, why),) = batch.skipped
    assert source == "a.jsonl:1" and f"prompt of {lengths[1]} tokens leaves no room" in why
    assert "rollout.max_total_tokens" in caplog.text
    # nothing left: no inputs, both counted
    empty = PromptCollator(processor, "frame_selection_thinking", max_total_tokens=lengths[0])(items)
    assert empty.inputs is None and len(empty.skipped) == 2


def test_collator_replaces_prompts_that_leave_no_room(video_root, tiny_checkpoint):
    """Given the dataset, a too-long prompt is replaced by another sample: the batch stays full."""
    from transformers import Qwen2_5_VLProcessor

    from museg_lit.data.datamodule import PromptCollator

    processor = Qwen2_5_VLProcessor.from_pretrained(tiny_checkpoint, local_files_only=True)
    long = GroundingSample(idx="L", problem="a much longer question " * 20, solution=[[0.5, 1.0]], video="ok.mp4",
                           task="tvg", source="a.jsonl:9")
    ds = GroundingDataset([_sample("ok.mp4", "0"), long, _sample("ok.mp4", "2")], str(video_root), FRAMES,
                          on_error="skip")
    short_len = PromptCollator(processor, "frame_selection_thinking")([ds[0]]).inputs["attention_mask"].sum()
    collate = PromptCollator(processor, "frame_selection_thinking", max_total_tokens=int(short_len) + 1, dataset=ds)
    batch = collate([ds[0], ds[1]])
    assert len(batch.samples) == 2 and "L" not in [s.idx for s in batch.samples]
    assert batch.drawn == 3 and [source for source, _ in batch.skipped] == ["a.jsonl:9"]
    assert ds.known_bad == {1: batch.skipped[0][1]}  # not decoded again when drawn later
