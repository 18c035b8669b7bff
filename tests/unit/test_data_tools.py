"""``make data`` (MUSEG's annotation files, perception_test.json and et_bench.json included) and
``make etbench-videos`` (E.T. Bench re-encoded as MUSEG's process_videos.py does)."""

from __future__ import annotations

import functools
import http.server
import json
import threading

import av
import pytest

from museg_lit.data import download
from museg_lit.data.download import MUSEG_FILES, DownloadError, download_museg
from museg_lit.evaluation import etbench_videos
from museg_lit.evaluation.etbench_videos import plan, reencode
from tests.optional import require_ffmpeg_cli
from tests.videos import make_video_ffmpeg


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no access log on stderr (the tests read stderr)
        pass


@pytest.fixture
def museg_server(tmp_path):
    """MUSEG's repository layout served on loopback (the test never leaves this machine)."""
    root = tmp_path / "repo"
    for rel in MUSEG_FILES:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"a": 1}\n{"a": 2}\n' if rel.endswith(".jsonl") else json.dumps([{"file": rel}]))
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_make_data_fetches_every_museg_file(museg_server, tmp_path):
    root, base = museg_server
    assert {"data/eval/grounding/perception_test.json", "data/eval/et_bench/et_bench.json"} <= set(MUSEG_FILES)
    paths = download_museg(tmp_path / "out", base)
    assert sorted(p.name for p in paths) == sorted(
        ["stage_1.jsonl", "stage_2.jsonl", "charades_sta.json", "thumos14.json", "thumos15.json",
         "perception_test.json", "et_bench.json", "subset.json"])
    assert json.loads((tmp_path / "out" / "et_bench.json").read_text()) == [{"file": "data/eval/et_bench/et_bench.json"}]
    assert not list((tmp_path / "out").glob("*.part"))


def test_make_data_refuses_lfs_pointers_and_broken_json(museg_server, tmp_path):
    root, base = museg_server
    (root / "data/eval/et_bench/et_bench.json").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:x\n")
    with pytest.raises(DownloadError, match="Git LFS pointer"):
        download_museg(tmp_path / "out", base, files=("data/eval/et_bench/et_bench.json",))
    (root / "data/train/stage_1.jsonl").write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(DownloadError, match=rf"^{base}/data/train/stage_1.jsonl:2: not JSON"):
        download_museg(tmp_path / "out", base, files=("data/train/stage_1.jsonl",))
    (root / "data/eval/grounding/thumos14.json").write_bytes(b'[{"q": "caf\xe2\x82"}]')
    with pytest.raises(DownloadError, match=r"thumos14.json: not UTF-8"):
        download_museg(tmp_path / "out", base, files=("data/eval/grounding/thumos14.json",))
    assert not (tmp_path / "out" / "stage_1.jsonl").exists() and not (tmp_path / "out" / "thumos14.json").exists()


def test_make_data_errors_are_one_line_and_exit_2(museg_server, tmp_path, capsys):
    root, base = museg_server
    (root / "data/train/stage_2.jsonl").unlink()  # the server answers 404
    with pytest.raises(SystemExit) as exc:
        download.main(["--out", str(tmp_path / "out"), "--base", base])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: {base}/data/train/stage_2.jsonl: HTTP Error 404: File not found"]
    assert (tmp_path / "out" / "stage_1.jsonl").is_file()  # the files before it were kept


def test_etbench_videos_errors_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    require_ffmpeg_cli()
    with pytest.raises(SystemExit) as exc:
        etbench_videos.main([str(tmp_path / "nowhere"), str(tmp_path / "out")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {tmp_path / 'nowhere'}: no such folder; unpack E.T. Bench's videos/<source>.tar.gz there"]
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg on the PATH
    with pytest.raises(SystemExit) as exc:
        etbench_videos.main([str(tmp_path), str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ffmpeg: not found on the PATH; install it")


def test_etbench_videos_keep_only_the_video_stream(tmp_path):
    require_ffmpeg_cli()
    src, dst = tmp_path / "et_bench", tmp_path / "et_bench_processed"
    (src / "qvhighlights").mkdir(parents=True)
    make_video_ffmpeg(src / "qvhighlights" / "a.mp4", seconds=1.0)  # video + a sine audio track
    (src / "README.txt").write_text("not a video")
    jobs, others = plan(src, dst)
    assert jobs == [(src / "qvhighlights" / "a.mp4", dst / "qvhighlights" / "a.mp4")] and others == [src / "README.txt"]
    assert reencode(src, dst, workers=1) == []
    with av.open(str(dst / "qvhighlights" / "a.mp4")) as container:
        assert [s.type for s in container.streams] == ["video"]
        assert sum(1 for _ in container.decode(video=0)) == 25
    mtime = (dst / "qvhighlights" / "a.mp4").stat().st_mtime_ns
    assert reencode(src, dst, workers=1) == []  # a rerun skips finished outputs
    assert (dst / "qvhighlights" / "a.mp4").stat().st_mtime_ns == mtime
