"""``etbench_metrics`` against E.T. Bench's ``compute_metrics.py`` itself: 1,800 generated answers over
the 12 tasks (correct, wrong, empty, malformed, overlapping, free text that needs the option
fallback, ...) scored by the reference with a tiny local sentence encoder, on the full set and on
MUSEG's subset (``tests/fixtures/etbench_parity/make_fixture.py`` regenerates the fixture)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest

from museg_lit.evaluation.etbench import etbench_metrics
from museg_lit.evaluation.sentsim import tiny_sentence_encoder
from tests.optional import require_module

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "etbench_parity" / "fixture.json"
# pycocoevalcap's scores are not part of etbench_metrics (see museg_lit.evaluation.caption_metrics)
COCO_KEYS = {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"}


@cache
def fixture() -> dict:
    return json.loads(FIXTURE.read_text())


@cache
def scored(run: str) -> dict:
    fx = fixture()
    enc = tiny_sentence_encoder(**fx["encoder"])  # the encoder the reference ran with, rebuilt offline
    return etbench_metrics(fx["records"], enc, subset=fx["subset_idx"] if run == "subset" else None)


def test_fixture_covers_every_task_with_hundreds_of_answers():
    tasks = {}
    for r in fixture()["records"]:
        tasks[r["task"]] = tasks.get(r["task"], 0) + 1
    assert len(tasks) == 12 and min(tasks.values()) >= 150


@pytest.mark.parametrize("run", ["full", "subset"])
def test_per_source_metrics_equal_the_reference(run):
    expected = fixture()[run]["metrics"]
    got = scored(run)["per_task"]
    assert set(got) == set(expected)
    for task, by_source in expected.items():
        assert set(got[task]) == set(by_source), task
        for source, ref in by_source.items():
            want = {k: v for k, v in ref.items() if k not in COCO_KEYS}
            assert got[task][source] == want, f"{task}/{source}"


@pytest.mark.parametrize("run", ["full", "subset"])
def test_overall_and_merged_rows_equal_the_reference(run):
    out, ref = scored(run), fixture()[run]
    assert out["overall"] == ref["overall"]
    assert out["merged"] == ref["merged"]
    # MUSEG's AVG (not printed by the reference): the mean of ref, gnd, cap F1 and com before rounding
    m = ref["merged"]
    assert out["avg"] == pytest.approx((m["Acc (ref)"] + m["F1 (gnd)"] + m["F1 (cap)"] + m["Rec (com)"]) / 4, abs=0.1)


def test_caption_coco_metrics_equal_the_reference():
    """BLEU-1..4, ROUGE-L, CIDEr of dvc / slc with pycocoevalcap (the optional extra; METEOR needs Java
    and a few seconds more, left to ``caption_metrics=True`` runs)."""
    require_module("pycocoevalcap", "pycocoevalcap", "pip install '.[caption]'")
    from museg_lit.evaluation.caption_metrics import coco_scorer
    from museg_lit.evaluation.etbench_metrics import dvc_scores

    fx = fixture()
    enc = tiny_sentence_encoder(**fx["encoder"])
    coco = coco_scorer(meteor=False)
    for task in ("dvc", "slc"):
        for source, ref in fx["full"]["metrics"][task].items():
            group = [r for r in fx["records"] if (r["task"], r["source"]) == (task, source)]
            got = dvc_scores(group, enc.encode, coco=coco)
            assert {k: got[k] for k in COCO_KEYS - {"METEOR"}} == {k: ref[k] for k in COCO_KEYS - {"METEOR"}}, source
