"""E.T. Bench scoring of all 12 tasks, by hand (values worked out in the comments), with a
transparent sentence encoder: L2-normalised bag of words over a small vocabulary (unknown words
dropped), so similarity = cosine of word counts, 1 for the same words, 0 for none shared."""

from __future__ import annotations

import doctest
import re

import numpy as np
import pytest

from museg_lit.evaluation import etbench_metrics as em
from museg_lit.evaluation.etbench_metrics import (
    SentSimRequired,
    dvc_format,
    dvc_scores,
    etbench_metrics,
    gvq_scores,
    option_scores,
    ptb_tokenize,
    tal_scores,
    tem_scores,
    tvg_scores,
)

VOCAB = ["dog", "runs", "cat", "sits", "man", "cuts", "onion", "woman", "reads", "book"]
OPTIONS = ["a dog runs", "a cat sits", "a man cuts", "a woman reads"]


class BagOfWords:
    def encode(self, texts):
        out = np.zeros((len(texts), len(VOCAB)), dtype=np.float32)  # [n, V]
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z]+", t.lower()):
                if w in VOCAB:
                    out[i, VOCAB.index(w)] += 1
        norm = np.linalg.norm(out, axis=1, keepdims=True)  # [n, 1]
        return out / np.where(norm > 0, norm, 1)


def sim():
    return em._Similarity(BagOfWords())


def test_doctests():
    assert doctest.testmod(em).failed == 0


def test_option_accuracy_letters_and_similarity_fallback():
    answers = ["(C)", "c. the man", "", "Best option: (C)", "(Z) foo", "the man cuts", "B"]
    samples = [{"o": OPTIONS, "p": 2, "a": a} for a in answers]
    # (C) hit; "c." leading letter hit; "" failed; "Best option: (C)" hit via (C);
    # "(Z) foo": letter seen but unknown -> similarity: no known word -> all 0 -> option A -> miss (not failed);
    # "the man cuts": no letter -> most similar option is C ("man cuts", cosine 1) -> hit, counted failed;
    # "B": wrong letter -> similarity of "b" (no known word) -> A -> miss, not failed.
    assert option_scores(samples, sim()) == {"Total": 7, "Failed": 2, "Acc": round(4 / 7, 5)}


def test_option_letters_come_from_the_first_sample_of_the_group():
    # first sample has 4 options, so "(E)" of the 5-option sample is not a known letter -> similarity -> A -> miss
    samples = [{"o": OPTIONS, "p": 0, "a": "A"}, {"o": [*OPTIONS, "a book"], "p": 4, "a": "(E)"}]
    assert option_scores(samples, sim()) == {"Total": 2, "Failed": 0, "Acc": 0.5}
    with pytest.raises(ValueError, match="4 or 5 options"):
        option_scores([{"o": OPTIONS[:3], "p": 0, "a": "A"}], sim())


def test_gvq_recall_over_correct_answers():
    tgt = [10, 20]
    answers = ["C. 10 - 20", "(C) from 12 to 20", "", "the man cuts at 15 - 30", "C", "A. 10 - 20"]
    samples = [{"o": OPTIONS, "p": 2, "tgt": tgt, "a": a} for a in answers]
    # correct: "C." (IoU 1), "(C)" (12-20: 0.8), similarity -> C (15-30: 5/20 = 0.25), "C" (no segment: failed);
    # "" failed; "A." wrong. Acc 4/6; R@0.1 3/6, R@0.3..0.7 2/6; mRec (0.5 + 3 * 1/3) / 4 = 0.375;
    # mIoU (1 + 0.8 + 0.25) / 6 = 0.34167
    out = gvq_scores(samples, sim())
    assert out == {"Total": 6, "Failed": 2, "mIoU": 0.34167, "R@0.1": 0.5, "R@0.3": 0.33333, "R@0.5": 0.33333,
                   "R@0.7": 0.33333, "mRec": 0.375, "Acc": 0.66667}


@pytest.mark.parametrize(("answer", "expected"), [
    ("0 - 10 seconds, a man cuts onion.\n12 - 30 seconds, a dog runs.",
     ([[0.0, 10.0], [12.0, 30.0]], ["a man cuts onion.", "a dog runs."])),
    ("Starting time: 1s ending time: 5 seconds description: a man talks",
     ([[1.0, 5.0]], ["a man talks"])),
    ("start time 1, end time 2, a man", (None, None)),  # the reference asserts this form away
    ("1:30 the man sits down", ([[70.0, 110.0]], ["1:30 the man sits down."])),  # m:ss -> 40 s window
    ("20 - 5 seconds: backwards", ([[5.0, 20.0]], [": backwards"])),  # ordered; ": " kept as the reference does
    ("", (None, None)),
    ("1..5 - 3 seconds, broken", (None, None)),  # unparsable number: failed
])
def test_dvc_format(answer, expected):
    assert dvc_format(answer) == expected


def test_dvc_detection_f1_and_sentence_similarity():
    s1 = {"video": "v1", "tgt": [[0, 10], [10, 20]], "g": ["a man cuts onion", "a woman reads book"],
          "a": "0 - 10 seconds, a man cuts onion.\n12 - 30 seconds, a dog runs."}
    s2 = {"video": "v2", "tgt": [[0, 5]], "g": ["a cat sits"], "a": ""}
    # v1: pred 0-10 ~ gt 0-10 IoU 1; pred 12-30 ~ gt 10-20: 8 / min(20, 28) = 0.4.
    # t 0.1, 0.3: P = R = 1; t 0.5, 0.7: P = R = 1/2. Only 1 of 2 samples parsed: scale 1/2 ->
    # F1@0.1 = F1@0.3 = 0.5, F1@0.5 = F1@0.7 = 0.25, F1 = 0.375.
    # SentSim: t <= 0.3: (man cuts onion ~ same) 1, (woman reads book ~ dog runs) 0 -> 0.5;
    # t >= 0.5: 1 and (random string ~ dog runs) 0 -> 0.5. The failed v2 is not averaged in.
    out = dvc_scores([s1, s2], BagOfWords().encode)
    assert out == {"Total": 2, "Failed": 1, "F1@0.1": 0.5, "F1@0.3": 0.5, "F1@0.5": 0.25, "F1@0.7": 0.25,
                   "F1": 0.375, "SentSim": 0.5}


def test_dvc_overlapping_and_no_caption_answers():
    # two identical (overlapping) predictions both cover the one gt: P = 2/2, R = 1 -> F1 1; both captions match: Sim 1
    s = {"video": "v", "tgt": [[0, 10]], "g": ["a man cuts onion"],
         "a": "0 - 10 seconds, a man cuts onion.\n0 - 10 seconds, a man cuts onion."}
    assert dvc_scores([s], BagOfWords().encode) == {"Total": 1, "Failed": 0, "F1@0.1": 1.0, "F1@0.3": 1.0,
                                                    "F1@0.5": 1.0, "F1@0.7": 1.0, "F1": 1.0, "SentSim": 1.0}
    # nothing parses: every score 0
    none = dvc_scores([{**s, "a": "no events"}], BagOfWords().encode)
    assert none["Failed"] == 1 and none["F1"] == 0 and none["SentSim"] == 0


def test_grounding_keys_as_in_the_reference():
    # tvg: gt 0-10; "2 - 7" IoU 0.5, "0 - 10" 1, "none" failed
    assert tvg_scores([{"tgt": [0, 10], "a": a} for a in ("2 - 7", "0 - 10", "none")]) == {
        "Total": 3, "Failed": 1, "mIoU": 0.5, "F1@0.1": 0.66667, "F1@0.3": 0.66667, "F1@0.5": 0.66667,
        "F1@0.7": 0.33333, "F1": round((2 + 2 + 2 + 1) / 3 / 4, 5)}
    # tem: best of the gt segments; 10-12 vs 10-14 -> 0.5
    assert tem_scores([{"tgt": [[0, 2], [10, 14]], "a": "10 - 12"}])["R@0.5"] == 1.0
    # tal, overlapping predictions: gt 0-10; preds 0-10 and 0-9 both reach IoU 0.9 -> P = R = 1 at <= 0.7
    assert tal_scores([{"tgt": [[0, 10]], "a": "0 - 10, 0 - 9"}])["F1"] == 1.0


def test_ptb_tokenize_matches_stanford_on_plain_captions():
    # expected values: pycocoevalcap 1.2's PTBTokenizer (Stanford 3.4.1, Java) + its punctuation filter
    cases = {
        "A man cuts the onion.": "a man cuts the onion",
        "He's adding salt, then pepper!": "he 's adding salt then pepper",
        "Don't stir (gently) the soup?": "do n't stir -lrb- gently -rrb- the soup",
        'She says "hello" to them; ok: fine': "she says hello to them ok fine",
        "well-known chef's knife - 3.5 cm": "well-known chef 's knife 3.5 cm",
        "It's the dog's bone; they're here": "it 's the dog 's bone they 're here",
        "end of video--really": "end of video really",
        "can't won't I'm we'll you'd": "ca n't wo n't i 'm we 'll you 'd",
        "U.S. Mr. Smith etc.": "u.s. mr. smith etc.",
        "cannot gonna": "can not gon na",
        "Door man mixes??": "door man mixes ??",  # a run of ? and ! is one token, kept
        "opens pot oil?!.": "opens pot oil ?!",
        "": "",
    }
    assert {k: ptb_tokenize(k) for k in cases} == cases


def _all_tasks() -> list[dict]:
    def rec(task, source="s", **kw):
        return {"task": task, "source": source, "idx": 0, "video": f"{task}.mp4", **kw}

    cap = {"tgt": [[0, 10]], "g": ["a man cuts onion"], "a": "0 - 10 seconds, a man cuts onion."}
    return [
        rec("rar", o=OPTIONS, p=0, a="(A)"), rec("eca", o=OPTIONS, p=1, a="B."), rec("rvq", o=OPTIONS, p=2, a=""),
        rec("tvg", tgt=[0, 10], a="0 - 10"), rec("epm", tgt=[0, 10], a="0 - 10"), rec("tal", tgt=[[0, 10]], a="0 - 10"),
        rec("evs", tgt=[[0, 10]], a="20 - 30"), rec("vhd", tgt=[[0, 10]], a="5"),
        rec("dvc", **cap), rec("slc", **cap),
        rec("tem", tgt=[[0, 10]], a="0 - 10"), rec("gvq", o=OPTIONS, p=0, tgt=[0, 10], a="A. 0 - 10"),
    ]


def test_overall_merged_and_avg_by_hand():
    out = etbench_metrics(_all_tasks(), BagOfWords())
    # rar 1, eca 1, rvq 0 (empty); tvg, epm, tal, vhd 1, evs 0 (no overlap); dvc, slc F1 1, Sim 1; tem, gvq 1
    assert out["overall"] == {
        "RAR (Acc)": 100.0, "EVC (Acc)": 100.0, "RVQ (Acc)": 0.0, "TVG (F1)": 100.0, "EPM (F1)": 100.0,
        "TAL (F1)": 100.0, "EVS (F1)": 0.0, "VHD (F1)": 100.0, "DVC (F1)": 100.0, "DVC (Sim)": 100.0,
        "SLC (F1)": 100.0, "SLC (Sim)": 100.0, "TEM (Rec)": 100.0, "GVQ (Rec)": 100.0}
    # ref 200/3 = 66.7, gnd 400/5 = 80, cap 100 / 100, com 100; avg (66.67 + 80 + 100 + 100) / 4 = 86.7
    assert out["merged"] == {"Acc (ref)": 66.7, "F1 (gnd)": 80.0, "F1 (cap)": 100.0, "Sim (cap)": 100.0,
                             "Rec (com)": 100.0}
    assert out["avg"] == 86.7
    assert out["per_task"]["rvq"]["s"] == {"Total": 1, "Failed": 1, "Acc": 0.0}
    assert out["task_means"]["dvc_sim"] == 1.0 and out["task_means"]["evs"] == 0.0


def test_missing_tasks_leave_columns_empty_and_sentsim_is_required():
    out = etbench_metrics([r for r in _all_tasks() if r["task"] in ("tvg", "tem")])
    assert out["overall"]["TVG (F1)"] == 100.0 and out["overall"]["RAR (Acc)"] is None
    assert out["merged"]["F1 (gnd)"] is None and out["avg"] is None
    with pytest.raises(SentSimRequired, match="rar.*sentence-similarity model"):
        etbench_metrics(_all_tasks()[:1])


def test_subset_keeps_an_empty_evs_source_as_zero():
    recs = [{"task": "evs", "source": "tvsum", "idx": 1, "tgt": [[0, 10]], "a": "0 - 10"},
            {"task": "evs", "source": "summe", "idx": 2, "tgt": [[0, 10]], "a": "0 - 10"},
            {"task": "tvg", "source": "charades_sta", "idx": 3, "tgt": [0, 10], "a": "0 - 10"},
            {"task": "tvg", "source": "qvhighlights", "idx": 4, "tgt": [0, 10], "a": "0 - 10"}]
    out = etbench_metrics(recs, subset={"evs": {"tvsum": [1]}, "tvg": {"charades_sta": [3]}})
    # summe has no subset sample: an empty group, F1 0, in the mean (1 + 0) / 2; tvg's empty source is left out
    assert out["per_task"]["evs"]["summe"] == {"Total": 0, "Failed": 0, "F1": 0}
    assert out["task_means"]["evs"] == 0.5 and set(out["per_task"]["tvg"]) == {"charades_sta"}


def test_table_picture_bars_are_the_overall_row(tmp_path):
    from museg_lit.evaluation.etbench_plots import etbench_figure, plot_etbench_table

    out = etbench_metrics(_all_tasks(), BagOfWords())
    out["overall"]["TAL (F1)"] = 42.5  # a distinct height, to see it land on the right bar
    fig = etbench_figure(out, "tiny")
    heights = [[round(p.get_height(), 3) for p in ax.patches] for ax in fig.axes]
    o = out["overall"]
    assert heights == [
        [o["RAR (Acc)"], o["EVC (Acc)"], o["RVQ (Acc)"]],
        [o["TVG (F1)"], o["EPM (F1)"], 42.5, o["EVS (F1)"], o["VHD (F1)"]],
        [o["DVC (F1)"], o["DVC (Sim)"], o["SLC (F1)"], o["SLC (Sim)"]],
        [o["TEM (Rec)"], o["GVQ (Rec)"]],
    ]
    assert [ax.get_title() for ax in fig.axes] == ["REF (Acc)", "GND (F1)", "CAP (F1, Sim)", "COM (Rec)"]
    assert fig.axes[0].get_lines()[0].get_ydata()[0] == out["merged"]["Acc (ref)"]  # the merged line
    assert "AVG 86.7" in fig.get_suptitle()
    path = plot_etbench_table(out, tmp_path / "t.png", title="tiny")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
