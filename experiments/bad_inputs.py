"""Bad-input probe: the mistakes a new user makes, tried through the real entry points.

Every case starts ``python -m museg_lit.train ...`` or ``python -m museg_lit.eval ...`` as a
subprocess (tiny model, 8 generated videos, at most a few CPU steps) in its own fresh root folder
``<runs-root>/<label>/<case>`` and classifies what came back:

* ``one-line error``: exit 2, exactly one stderr line starting with ``error: ``, no ``Traceback``;
* ``traceback``: a Python traceback on stderr;
* ``accepted``: exit 0, with what happened (checkpoint step, resumed from, skipped samples,
  warnings, rows written by an evaluation);
* ``error (exit N, ...)``: anything else (e.g. Hydra's own messages), ``timeout``, ``setup failed``.

The tiny checkpoint and the synthetic data are built once, with the installed (current) code, in
``--assets`` (default /tmp/probe_assets) and reused by every version. Each subprocess's stdout and
stderr are kept in ``<case>/_logs/``.

Reproduce (from the repository root, 2 CPU cores: run the versions one after the other)::

    export HF_HUB_OFFLINE=1
    git worktree add /tmp/before 1d182ae
    python experiments/bad_inputs.py --src /tmp/before/src --label before \\
        --out experiments/results/bad_inputs_before.md --json experiments/results/bad_inputs_before.json
    python experiments/bad_inputs.py --label after \\
        --out experiments/results/bad_inputs_after.md --json experiments/results/bad_inputs_after.json
    python experiments/bad_inputs.py --compare experiments/results/bad_inputs_before.json \\
        experiments/results/bad_inputs_after.json --out experiments/results/bad_inputs.md
    git worktree remove --force /tmp/before

``--src DIR`` puts DIR first on the subprocesses' PYTHONPATH (shadowing the editable install; the
config folder is found next to the package, so DIR/../conf is used). ``--only a,b`` runs a subset.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

TIMEOUT_S = 240
DETAIL_CHARS = 200
BAD = 2  # 0-based index of the annotation line most cases spoil (file line 3)
RUN = "r"  # run_name of the resume cases
ESCAPE_TARGET = "/etc/passwd"


# ---------------------------------------------------------------- subprocesses
@dataclass
class Proc:
    """One finished (or timed-out) subprocess."""

    command: str
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float

    @property
    def output(self) -> str:
        return self.stdout + "\n" + self.stderr


class SetupFailed(Exception):
    """A preparatory run (the first training or evaluation of a resume case) did not succeed."""

    def __init__(self, proc: Proc):
        super().__init__(f"setup run exited {proc.returncode}")
        self.proc = proc


@dataclass
class Probe:
    """Where the assets are, which code runs, and where the runs of this version go."""

    label: str
    src: Path | None
    assets: Path
    runs: Path

    @property
    def tiny(self) -> Path:
        return self.assets / "tiny"

    @property
    def synthetic(self) -> Path:
        return self.assets / "synthetic"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MUSEG_ROOT")}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1",
                   TOKENIZERS_PARALLELISM="false", MLFLOW_ENABLE_ASYNC_LOGGING="false")
        if self.src is not None:
            env["PYTHONPATH"] = str(self.src)
        return env

    def run(self, case_dir: Path, module: str, args: dict[str, object], tag: str) -> Proc:
        argv = [sys.executable, "-m", module, *render(args)]
        prefix = f"PYTHONPATH={self.src} " if self.src is not None else ""
        command = f"cd {case_dir} && HF_HUB_OFFLINE=1 {prefix}{shlex.join(['python', *argv[1:]])}"
        start = time.monotonic()
        try:
            done = subprocess.run(argv, cwd=case_dir, env=self.env(), capture_output=True, timeout=TIMEOUT_S)
            rc, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            rc, out, err = None, exc.stdout or b"", exc.stderr or b""
        proc = Proc(command, rc, decode(out), decode(err), round(time.monotonic() - start, 1))
        keep_logs(case_dir, tag, proc)
        return proc

    def train_args(self, case_dir: Path, updates: dict[str, object] | None = None) -> dict[str, object]:
        args: dict[str, object] = {
            "paths.root_dir": case_dir, "model.path": self.tiny, "logger": "none", "data.synthetic": "null",
            "data.annotation_file": self.synthetic / "train.jsonl", "data.video_root": self.synthetic,
            "trainer.enable_progress_bar": "false", "rollout.max_new_tokens": 8, "rollout.num_generations": 2,
            "data.batch_size": 1, "trainer.max_steps": 2,
        }
        args.update(updates or {})
        return args

    def train(self, case_dir: Path, updates: dict[str, object] | None = None, tag: str = "run") -> Proc:
        return self.run(case_dir, "museg_lit.train", self.train_args(case_dir, updates), tag)

    def eval(self, case_dir: Path, updates: dict[str, object] | None = None, tag: str = "run") -> Proc:
        args: dict[str, object] = {
            "model": "tiny", "name": "tiny", "model.path": self.tiny, "data": "charades_sta", "task": "tvg",
            "data.video_root": self.synthetic, "paths.root_dir": case_dir,
            "data.annotation_file": case_dir / "ann.json", "max_new_tokens": 8, "batch_size": 4,
            "data.num_workers": 0, "logger": "none",
        }
        args.update(updates or {})
        return self.run(case_dir, "museg_lit.eval", args, tag)


def render(args: dict[str, object]) -> list[str]:
    """``{"a.b": 1}`` -> ``["a.b=1"]``; a value of None drops the key."""
    return [f"{key}={value}" for key, value in args.items() if value is not None]


def decode(data: bytes | str) -> str:
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")


def keep_logs(case_dir: Path, tag: str, proc: Proc) -> None:
    logs = case_dir / "_logs"
    logs.mkdir(exist_ok=True)
    (logs / f"{tag}.cmd").write_text(proc.command + "\n")
    (logs / f"{tag}.stdout").write_text(proc.stdout)
    (logs / f"{tag}.stderr").write_text(proc.stderr)


def require_success(proc: Proc) -> Proc:
    if proc.returncode != 0:
        raise SetupFailed(proc)
    return proc


# ---------------------------------------------------------------- classification
PROGRESS = re.compile(r"\d+%\||it/s\]|s/it\]|query/s\]|s/query\]")


def meaningful_lines(text: str) -> list[str]:
    """Lines of ``text`` without progress bars, blank lines and Hydra's HYDRA_FULL_ERROR hint."""
    return [ln.strip() for ln in text.splitlines()
            if ln.strip() and not PROGRESS.search(ln) and not ln.startswith("Set the environment variable HYDRA")]


def error_lines(proc: Proc) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]


def classify(proc: Proc) -> str:
    if proc.returncode is None:
        return "timeout"
    if "Traceback" in proc.stderr:
        return "traceback"
    if proc.returncode == 0:
        return "accepted"
    if proc.returncode == 2 and len(error_lines(proc)) == 1:
        return "one-line error"
    if "Error executing job" in proc.stderr:
        return f"Hydra error (exit {proc.returncode}, no traceback)"
    return f"error (exit {proc.returncode}, {len(error_lines(proc))} `error:` lines)"


def hydra_error(proc: Proc) -> str | None:
    """Hydra's ``Error in call to target 'X':`` and the exception on the next line, joined."""
    lines = meaningful_lines(proc.stderr)
    for i, line in enumerate(lines):
        if line.startswith("Error in call to target") and i + 1 < len(lines):
            return f"{line} {lines[i + 1]}"
    return None


def detail(proc: Proc) -> str:
    """The first ``error:`` line, else the last meaningful stderr line (else stdout's)."""
    errors = error_lines(proc)
    if not errors and (hydra := hydra_error(proc)):
        return shorten(hydra)
    if lines := errors[:1] or meaningful_lines(proc.stderr)[-1:]:
        return shorten(lines[0])
    last_out = meaningful_lines(proc.stdout)[-1:]
    return shorten(f"(no stderr) stdout: {last_out[0]}" if last_out else "(no output)")


def shorten(text: str, limit: int = DETAIL_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- what an accepted run did
def newest_step(case_dir: Path) -> int | None:
    steps = [int(m.group(1)) for p in case_dir.rglob("step_*.ckpt")
             if not p.is_symlink() and (m := re.fullmatch(r"step_(\d+)\.ckpt", p.name))]
    return max(steps, default=None)


def warnings_of(proc: Proc) -> list[str]:
    return [ln for ln in meaningful_lines(proc.output)
            if "[WARNING]" in ln or ln.lower().startswith(("warning", "userwarning"))]


def grep(proc: Proc, pattern: str) -> list[str]:
    return [ln for ln in meaningful_lines(proc.output) if re.search(pattern, ln)]


def strip_log_prefix(line: str) -> str:
    """``[time][logger][LEVEL] - message`` -> ``message``."""
    return re.sub(r"^\[[^]]*\]\[[^]]*\]\[[A-Z]+\] - ", "", line)


def train_summary(proc: Proc, case_dir: Path) -> str:
    parts = []
    step = newest_step(case_dir)
    parts.append(f"newest checkpoint step {step}" if step is not None else "no checkpoint")
    if stopped := grep(proc, r"`Trainer.fit` stopped"):
        parts.append(stopped[-1].replace("`Trainer.fit` stopped: ", "fit stopped: "))
    if restored := grep(proc, r"Restoring states from the checkpoint path at"):
        parts.append("resumed from " + Path(restored[-1].split(" at ")[-1]).name)
    skipped = grep(proc, r"skipping sample")
    if skipped:
        parts.append(f"{len(skipped)} 'skipping sample' warnings (first: {strip_log_prefix(skipped[0])})")
    if said := grep(proc, r"^museg_lit: "):
        parts.append(f"said: {said[-1]}")
    others = [w for w in warnings_of(proc) if not re.search(r"skipping sample|damaged", w)]
    if others:
        parts.append(f"{len(others)} other warnings (first: {strip_log_prefix(others[0])})")
    return shorten("; ".join(parts), 400)


def eval_dir(case_dir: Path) -> Path:
    return case_dir / "logs" / "eval" / "charades_sta" / "tiny"


def prediction_rows(case_dir: Path) -> list[dict]:
    path = eval_dir(case_dir) / "predictions.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_bytes().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            rows.append({"unparsable": True})
    return rows


def eval_summary(proc: Proc, case_dir: Path) -> str:
    parts = [f"predictions.jsonl has {len(prediction_rows(case_dir))} rows"]
    metrics = eval_dir(case_dir) / "metrics.json"
    if metrics.exists():
        parts.append(f"num_generated_now={json.loads(metrics.read_text()).get('num_generated_now')}")
    if headline := grep(proc, r"m_iou = "):
        parts.append(headline[-1].split(";")[0])
    if warned := warnings_of(proc):
        parts.append(f"{len(warned)} warnings (first: {strip_log_prefix(warned[0])})")
    return shorten("; ".join(parts), 400)


# ---------------------------------------------------------------- annotation edits
def set_raw(line: bytes, key: str, raw: str) -> bytes:
    """The JSON line with ``key`` set to the raw JSON text ``raw`` (NaN, Infinity, ... included)."""
    obj = json.loads(line)
    obj[key] = "__RAW__"
    return json.dumps(obj).replace('"__RAW__"', raw).encode()


def drop_key(line: bytes, key: str) -> bytes:
    obj = json.loads(line)
    obj.pop(key)
    return json.dumps(obj).encode()


def edit_line(index: int, change: Callable[[bytes], bytes]) -> Callable[[list[bytes]], list[bytes]]:
    def edit(lines: list[bytes]) -> list[bytes]:
        return [change(ln) if i == index else ln for i, ln in enumerate(lines)]
    return edit


def beyond_duration(line: bytes) -> bytes:
    obj = json.loads(line)
    obj.pop("duration")
    obj["solution"] = [[obj["solution"][0][0], 999]]
    return json.dumps(obj).encode()


def non_utf8(line: bytes) -> bytes:
    return line.replace(b'"problem": "', b'"problem": "\xff\xfe', 1)


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(ln + b"\n" for ln in lines))
    return path


def annotation_case(edit: Callable[[list[bytes]], list[bytes]], updates: dict[str, object] | None = None):
    """A case that trains on a spoilt copy of the synthetic train.jsonl."""
    def run(p: Probe, d: Path) -> tuple[Proc, str]:
        lines = (p.synthetic / "train.jsonl").read_bytes().splitlines()
        ann = write_lines(d / "train.jsonl", edit(lines))
        proc = p.train(d, {"data.annotation_file": ann, **(updates or {})})
        return proc, train_summary(proc, d)
    return run


def empty_file_case(p: Probe, d: Path) -> tuple[Proc, str]:
    (d / "train.jsonl").write_bytes(b"")
    proc = p.train(d, {"data.annotation_file": d / "train.jsonl"})
    return proc, train_summary(proc, d)


def video_escape_case(p: Probe, d: Path) -> tuple[Proc, str]:
    escape = os.path.relpath(ESCAPE_TARGET, p.synthetic)
    lines = (p.synthetic / "train.jsonl").read_bytes().splitlines()
    lines[0] = set_raw(lines[0], "video", json.dumps(escape))
    ann = write_lines(d / "train.jsonl", lines)
    proc = p.train(d, {"data.annotation_file": ann, "data.shuffle": "false"})
    return proc, train_summary(proc, d)


# ---------------------------------------------------------------- videos, config, outputs
def config_case(updates: dict[str, object]):
    def run(p: Probe, d: Path) -> tuple[Proc, str]:
        proc = p.train(d, updates)
        return proc, train_summary(proc, d)
    return run


def video_one_broken_case(p: Probe, d: Path) -> tuple[Proc, str]:
    data = d / "synthetic"
    shutil.copytree(p.synthetic, data)
    (data / "videos" / "train_0_00001.mp4").write_text("this is not a video\n")
    proc = p.train(d, {"data.annotation_file": data / "train.jsonl", "data.video_root": data,
                       "trainer.max_steps": 4, "data.shuffle": "false"})
    return proc, train_summary(proc, d)


def ckpt_under_file_case(p: Probe, d: Path) -> tuple[Proc, str]:
    (d / "a_file").write_text("x\n")
    proc = p.train(d, {"callbacks": "default", "callbacks.checkpoint.dirpath": d / "a_file" / "ckpts",
                       "callbacks.checkpoint.every_n_train_steps": 25})
    return proc, train_summary(proc, d)


def mlflow_under_file_case(p: Probe, d: Path) -> tuple[Proc, str]:
    (d / "a_file").write_text("x\n")
    proc = p.train(d, {"logger": "mlflow", "paths.mlflow_uri": f"sqlite:///{d}/a_file/x/mlflow.db"})
    return proc, train_summary(proc, d)


# ---------------------------------------------------------------- checkpoints and resume
RESUME_ARGS: dict[str, object] = {"run_name": RUN, "callbacks.checkpoint.every_n_train_steps": 1}


def finished_run(p: Probe, d: Path) -> Path:
    """Train ``run_name=r`` for 2 steps (a checkpoint every step); its checkpoint folder."""
    require_success(p.train(d, {**RESUME_ARGS, "trainer.max_steps": 2}, tag="setup"))
    return d / "logs" / "train" / "runs" / RUN / "checkpoints"


def resume_summary(proc: Proc, d: Path) -> str:
    damaged = grep(proc, r"damaged")
    head = f"'damaged' lines: {len(damaged)}" + (f" (first: {strip_log_prefix(damaged[0])})" if damaged else "")
    return shorten(f"{head}; {train_summary(proc, d)}", 400)


def flipped_byte_case(p: Probe, d: Path) -> tuple[Proc, str]:
    newest = finished_run(p, d) / "step_00000002.ckpt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    proc = p.train(d, {**RESUME_ARGS, "trainer.max_steps": 3})
    return proc, resume_summary(proc, d)


def truncated_case(p: Probe, d: Path) -> tuple[Proc, str]:
    newest = finished_run(p, d) / "step_00000002.ckpt"
    with newest.open("r+b") as fh:
        fh.truncate(newest.stat().st_size // 2)
    proc = p.train(d, {**RESUME_ARGS, "trainer.max_steps": 3})
    return proc, resume_summary(proc, d)


def rerun_case(updates: dict[str, object]):
    """A finished run, then the same command with ``updates``."""
    def run(p: Probe, d: Path) -> tuple[Proc, str]:
        finished_run(p, d)
        proc = p.train(d, {**RESUME_ARGS, "trainer.max_steps": 2, **updates})
        return proc, resume_summary(proc, d)
    return run


def resume_missing_case(p: Probe, d: Path) -> tuple[Proc, str]:
    missing = d / "nope.ckpt"
    proc = p.train(d, {"resume": missing})
    return proc, train_summary(proc, d)


# ---------------------------------------------------------------- evaluation
def write_eval_annotations(p: Probe, d: Path, n: int = 3) -> Path:
    rows = [json.loads(ln) for ln in (p.synthetic / "train.jsonl").read_text().splitlines()[:n]]
    items = [{"video": r["video"], "question": r["problem"], "groundtruth": r["solution"]} for r in rows]
    path = d / "ann.json"
    path.write_text(json.dumps(items, indent=1))
    return path


def finished_eval(p: Probe, d: Path) -> Path:
    write_eval_annotations(p, d)
    require_success(p.eval(d, tag="setup"))
    return eval_dir(d)


CHANGED_QUESTION = "Find when the text query 'a black hexagon appears' happens in the video."
CHANGED_GT = [[0.5, 1.5]]


def eval_changed_case(p: Probe, d: Path) -> tuple[Proc, str]:
    finished_eval(p, d)
    ann = d / "ann.json"
    items = json.loads(ann.read_text())
    items[1].update(question=CHANGED_QUESTION, groundtruth=CHANGED_GT)
    ann.write_text(json.dumps(items, indent=1))
    proc = p.eval(d)
    rows = prediction_rows(d)
    last = next((r for r in reversed(rows) if r.get("id") == "1"), {})
    fresh = last.get("question") == CHANGED_QUESTION and last.get("groundtruth") == CHANGED_GT
    ids = ",".join(str(r.get("id")) for r in rows)
    said = f"last row of id 1 holds the {'new' if fresh else 'OLD'} question/groundtruth; row ids in file: {ids}"
    return proc, shorten(f"{said}; {eval_summary(proc, d)}", 400)


def eval_torn_case(p: Probe, d: Path) -> tuple[Proc, str]:
    with (finished_eval(p, d) / "predictions.jsonl").open("ab") as fh:
        fh.write(b'{"id": "x", "output": "\xe2\x82')
    proc = p.eval(d)
    return proc, eval_summary(proc, d)


def broken_model(p: Probe, d: Path) -> Path:
    """A copy of the tiny checkpoint whose ``config.json`` is not JSON."""
    model = d / "badmodel"
    shutil.copytree(p.tiny, model)
    (model / "config.json").write_text("{not json")
    return model


def eval_bad_config_case(p: Probe, d: Path) -> tuple[Proc, str]:
    write_eval_annotations(p, d)
    proc = p.eval(d, {"model.path": broken_model(p, d)})
    return proc, eval_summary(proc, d)


def train_bad_config_case(p: Probe, d: Path) -> tuple[Proc, str]:
    proc = p.train(d, {"model.path": broken_model(p, d)})
    return proc, train_summary(proc, d)


def eval_bad_meta_case(p: Probe, d: Path) -> tuple[Proc, str]:
    (finished_eval(p, d) / "run_meta.json").write_text("{garbage")
    proc = p.eval(d)
    return proc, eval_summary(proc, d)


# ---------------------------------------------------------------- the cases
@dataclass
class Case:
    name: str
    input: str
    run: Callable[[Probe, Path], tuple[Proc, str]]


def cases() -> list[Case]:
    line3 = f"line {BAD + 1}"
    return [
        Case("ann_nan", "annotation line 1: `\"solution\": [[NaN, 3]]`",
             annotation_case(edit_line(0, lambda ln: set_raw(ln, "solution", "[[NaN, 3]]")))),
        Case("ann_infinity", f"annotation {line3}: `\"solution\": [[1, Infinity]]`",
             annotation_case(edit_line(BAD, lambda ln: set_raw(ln, "solution", "[[1, Infinity]]")))),
        Case("ann_str_bool", f"annotation {line3}: `\"solution\": [[\"1\", true]]`",
             annotation_case(edit_line(BAD, lambda ln: set_raw(ln, "solution", '[["1", true]]')))),
        Case("ann_duration_nan_str", f"annotation {line3}: `\"duration\": \"NaN\"`",
             annotation_case(edit_line(BAD, lambda ln: set_raw(ln, "duration", '"NaN"')))),
        Case("ann_bad_json", f"annotation {line3}: `{{not json`",
             annotation_case(edit_line(BAD, lambda ln: b"{not json"))),
        Case("ann_missing_key", f"annotation {line3}: no `problem` key",
             annotation_case(edit_line(BAD, lambda ln: drop_key(ln, "problem")))),
        Case("ann_wrong_type", f"annotation {line3}: `\"problem\": 5`",
             annotation_case(edit_line(BAD, lambda ln: set_raw(ln, "problem", "5")))),
        Case("ann_non_utf8", f"annotation {line3}: bytes `\\xff\\xfe` in `problem`",
             annotation_case(edit_line(BAD, non_utf8))),
        Case("ann_empty_file", "empty annotation file", empty_file_case),
        Case("ann_duplicate_ids", f"annotation {line3}: `\"idx\": 0` (same as line 1)",
             annotation_case(edit_line(BAD, lambda ln: set_raw(ln, "idx", "0")))),
        Case("ann_bad_task", f"annotation {line3}: `\"task\": \"bogus\"`",
             annotation_case(edit_line(BAD, lambda ln: set_raw(ln, "task", '"bogus"')))),
        Case("ann_beyond_decoded_duration",
             "annotation line 1: no `duration`, solution end 999; `data.segment_policy=error data.shuffle=false`",
             annotation_case(edit_line(0, beyond_duration), {"data.segment_policy": "error", "data.shuffle": "false"})),
        Case("video_root_wrong", "`data.video_root=/tmp/nowhere`", config_case({"data.video_root": "/tmp/nowhere"})),
        Case("video_one_broken", "1 of 8 videos is a text file; `trainer.max_steps=4 data.shuffle=false`",
             video_one_broken_case),
        Case("video_escape", f"annotation line 1: `\"video\"` = relative path to {ESCAPE_TARGET} "
             "(`../../../etc/passwd`); `data.shuffle=false`", video_escape_case),
        Case("cfg_num_generations_abc", "`rollout.num_generations=abc`", config_case({"rollout.num_generations": "abc"})),
        Case("cfg_lr_fast", "`optim.optimizer.lr=fast`", config_case({"optim.optimizer.lr": "fast"})),
        Case("cfg_batch_size_0", "`data.batch_size=0`", config_case({"data.batch_size": 0})),
        Case("cfg_accumulate_0", "`trainer.accumulate_grad_batches=0`",
             config_case({"trainer.accumulate_grad_batches": 0})),
        Case("cfg_segment_policy_bogus", "`data.segment_policy=bogus`", config_case({"data.segment_policy": "bogus"})),
        Case("cfg_temperature_0", "`rollout.temperature=0`", config_case({"rollout.temperature": 0})),
        Case("cfg_epsilon_low_neg", "`algo.epsilon_low=-1`", config_case({"algo.epsilon_low": -1})),
        Case("cfg_fps_0", "`data.frames.fps=0`", config_case({"data.frames.fps": 0})),
        Case("cfg_precision_fp8", "`trainer.precision=fp8`", config_case({"trainer.precision": "fp8"})),
        Case("cfg_seed_str", "`seed=x`", config_case({"seed": "x"})),
        Case("cfg_global_batch_15", "`data.global_batch_size=15 data.batch_size=2`",
             config_case({"data.global_batch_size": 15, "data.batch_size": 2})),
        Case("out_ckpt_under_file", "`callbacks=default callbacks.checkpoint.dirpath=<regular file>/ckpts`",
             ckpt_under_file_case),
        Case("out_mlflow_under_file", "`logger=mlflow paths.mlflow_uri=sqlite:///<regular file>/x/mlflow.db`",
             mlflow_under_file_case),
        Case("ckpt_flipped_byte", "finished run (2 steps, ckpt every step); one byte of step 2's ckpt flipped; "
             "rerun with `trainer.max_steps=3`", flipped_byte_case),
        Case("resume_changed_lr", "finished run, same command with `optim.optimizer.lr=0.001`",
             rerun_case({"optim.optimizer.lr": 0.001})),
        Case("resume_changed_batch", "finished run, same command with `data.batch_size=2`",
             rerun_case({"data.batch_size": 2})),
        Case("rerun_finished", "finished run, the identical command again", rerun_case({})),
        Case("resume_missing_path", "`resume=<missing file>.ckpt`", resume_missing_case),
        Case("ckpt_truncated", "finished run; step 2's ckpt cut to half its size; rerun with `trainer.max_steps=3`",
             truncated_case),
        Case("eval_changed_in_place", "finished eval (3 items); item id 1's question and ground truth changed "
             "in place; same command again", eval_changed_case),
        Case("eval_torn_utf8", "finished eval; `predictions.jsonl` + `{\"id\": \"x\", \"output\": \"\\xe2\\x82` "
             "(no newline); same command again", eval_torn_case),
        Case("eval_bad_config_json", "eval with `model.path=<dir whose config.json is {not json>`",
             eval_bad_config_case),
        Case("train_bad_config_json", "training with `model.path=<dir whose config.json is {not json>`",
             train_bad_config_case),
        Case("eval_bad_run_meta", "finished eval; `run_meta.json` = `{garbage`; same command again",
             eval_bad_meta_case),
    ]


# ---------------------------------------------------------------- running and reporting
@dataclass
class Result:
    name: str
    input: str
    exit_code: int | None
    outcome: str
    detail: str
    wall_s: float
    commands: list[str] = field(default_factory=list)


def run_case(case: Case, probe: Probe) -> Result:
    d = probe.runs / case.name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    start = time.monotonic()
    try:
        proc, summary = case.run(probe, d)
        outcome = classify(proc)
        if outcome == "accepted":
            outcome = f"accepted: {summary}"
    except SetupFailed as failed:
        proc, outcome = failed.proc, f"setup failed ({classify(failed.proc)})"
    commands = [(d / "_logs" / f"{tag}.cmd").read_text().strip() for tag in ("setup", "run")
                if (d / "_logs" / f"{tag}.cmd").exists()]
    return Result(case.name, case.input, proc.returncode, outcome, detail(proc),
                  round(time.monotonic() - start, 1), commands)


def ensure_assets(assets: Path) -> None:
    """The tiny checkpoint and 8 synthetic videos, built once with the installed code."""
    if (assets / "tiny" / "config.json").exists() and (assets / "synthetic" / "train.jsonl").exists():
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from museg_lit.data.synthetic import SyntheticSpec, generate_synthetic_dataset
    from museg_lit.models.tiny import build_tiny_checkpoint

    build_tiny_checkpoint(assets / "tiny", seed=0)
    generate_synthetic_dataset(SyntheticSpec(out_dir=str(assets / "synthetic"), num_samples=8, seed=0))


def git_state(src: Path) -> dict[str, object]:
    repo = src.resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return done.stdout.strip()

    changed = [ln for ln in git("status", "--porcelain", "--", "src", "conf").splitlines() if ln.strip()]
    return {"repo": str(repo), "commit": git("rev-parse", "--short", "HEAD"), "uncommitted_src_conf_files": len(changed)}


def cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def version_markdown(meta: dict, results: list[Result]) -> str:
    lines = [f"# Bad-input probe: {meta['label']}", "",
             f"- code: `{meta['src']}` (commit `{meta['commit']}`, {meta['uncommitted_src_conf_files']} uncommitted "
             "files under src/ and conf/ at the start)",
             f"- started {meta['started']}, total wall time {meta['wall_s']} s, {len(results)} cases",
             f"- reproduce: `{meta['argv']}`", "",
             "| case | input | exit | outcome | first `error:` / last stderr line |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.name} | {cell(r.input)} | {r.exit_code} | {cell(r.outcome)} | {cell(r.detail)} |"
              for r in results]
    lines += ["", "## Commands (the last one is the probe; `setup` runs first)", ""]
    for r in results:
        lines += [f"- **{r.name}** ({r.wall_s} s)"] + [f"  - `{c}`" for c in r.commands]
    return "\n".join(lines) + "\n"


def run_probe(args: argparse.Namespace) -> None:
    src = Path(args.src).resolve() if args.src else None
    label = args.label or (src.parent.name if src else "current")
    ensure_assets(Path(args.assets))
    probe = Probe(label, src, Path(args.assets), Path(args.runs_root) / label)
    meta = {"label": label, "src": str(src or "installed package"), **git_state(src or Path(__file__).parents[1] / "src"),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": shlex.join(["python", *sys.argv])}
    selected = [c for c in cases() if not args.only or c.name in args.only.split(",")]
    start, results = time.monotonic(), []
    for case in selected:
        results.append(result := run_case(case, probe))
        print(f"[{label}] {result.name}: exit {result.exit_code}, {shorten(result.outcome, 120)} ({result.wall_s} s)",
              file=sys.stderr, flush=True)
    meta["wall_s"] = round(time.monotonic() - start, 1)
    text = version_markdown(meta, results)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=1) + "\n")


def compare_cell(r: dict | None) -> str:
    if r is None:
        return "(not run)"
    return cell(f"**{shorten(r['outcome'], 300)}** (exit {r['exit_code']}): {r['detail']}")


def compare_markdown(before: dict, after: dict) -> str:
    old = {r["name"]: r for r in before["results"]}
    new = {r["name"]: r for r in after["results"]}
    names = list(old) + [n for n in new if n not in old]
    lines = ["# Bad input: before and after", ""]
    for side, data in (("before", before), ("after", after)):
        m = data["meta"]
        lines.append(f"- {side}: `{m['src']}` at commit `{m['commit']}` ({m['uncommitted_src_conf_files']} "
                     f"uncommitted files under src/ and conf/), started {m['started']}, {m['wall_s']} s")
    lines += ["", "| case | input | before | after |", "| --- | --- | --- | --- |"]
    for name in names:
        entry = new.get(name) or old[name]
        lines.append(f"| {name} | {cell(entry['input'])} | {compare_cell(old.get(name))} | {compare_cell(new.get(name))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", help="src folder put first on PYTHONPATH (default: the installed package)")
    parser.add_argument("--label", help="version name for the run folders (default: the src folder's parent)")
    parser.add_argument("--out", help="markdown file to write")
    parser.add_argument("--json", help="JSON file to write")
    parser.add_argument("--only", help="comma-separated case names")
    parser.add_argument("--assets", default="/tmp/probe_assets", help="tiny checkpoint + synthetic data (built once)")
    parser.add_argument("--runs-root", default="/tmp/probe_runs", help="run folders: <runs-root>/<label>/<case>")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE_JSON", "AFTER_JSON"),
                        help="write the before/after table from two --json files instead of probing")
    parser.add_argument("--list", action="store_true", help="list the case names and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(f"{c.name}: {c.input}" for c in cases()))
    elif args.compare:
        before, after = (json.loads(Path(p).read_text()) for p in args.compare)
        text = compare_markdown(before, after)
        print(text)
        if args.out:
            Path(args.out).write_text(text)
    else:
        run_probe(args)


if __name__ == "__main__":
    main()
