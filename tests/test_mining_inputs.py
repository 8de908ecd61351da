"""Mining real and hostile files end to end: the corrupt-input corpus, the damaged sample
video, tracks on the real sample videos with a contact sheet, status/verify as JSON."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from sqlalchemy import select

from vidmine.mining.cli import main
from vidmine.mining.config import MiningConfig
from vidmine.mining.decode import VideoReader, VideoRejected, decode_only
from vidmine.mining.pipeline import mine_video
from vidmine.mining.synthetic import generate_video, write_h264
from vidmine.storage.cli import main as store_main
from vidmine.storage.schema import crops, tracks, videos
from vidmine.storage.store import StorageConfig, Store

FAST = ["--stable-s", "0", "--workers", "1"]


def _write_audio_only(path: Path) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = (np.sin(np.linspace(0, 400, 16000)) * 0.3).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture
def corrupt_corpus(tmp_path) -> tuple[Path, dict[str, str]]:
    """A folder of broken files (and one good one), each with the reason we expect."""
    folder = tmp_path / "videos"
    good = folder / "good.mp4"
    generate_video(good, seed=1, seconds=2.0)
    data = good.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 4])
    rng = np.random.default_rng(0)
    (folder / "garbage.avi").write_bytes(rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    (folder / "renamed_text.mkv").write_text("these are notes, not a video\n" * 100)
    (folder / "zero.mp4").write_bytes(b"")
    _write_audio_only(folder / "audio_only.mp4")
    # A good header followed by garbage: the demuxer finds nothing decodable after it.
    (folder / "header_then_garbage.mp4").write_bytes(
        data[:4096] + rng.integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    expected = {"truncated.mp4": "truncat", "garbage.avi": "",
                "renamed_text.mkv": "not a readable video container", "zero.mp4": "empty file",
                "audio_only.mp4": "audio only", "header_then_garbage.mp4": ""}
    return folder, expected


def test_corrupt_inputs_fail_with_one_line_reasons_and_the_run_succeeds(tmp_path, corrupt_corpus, capsys):
    folder, expected = corrupt_corpus
    work = tmp_path / "work"
    rc = main(["run", str(folder), "--workdir", str(work), "--json", "--working-long-side", "320",
               *FAST])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["done"] == 1 and out["failed"] == len(expected), out
    store = Store(StorageConfig(workdir=str(work)))
    with store.index.read() as conn:
        rows = {Path(p).name: (s, e) for p, s, e in conn.execute(
            select(videos.c.path, videos.c.status, videos.c.error))}
        bad_ids = [i for i, p in conn.execute(select(videos.c.id, videos.c.path))
                   if Path(p).name != "good.mp4"]
        assert conn.execute(select(crops.c.id).where(crops.c.video_id.in_(bad_ids))).first() is None
    store.close()
    assert rows["good.mp4"][0] == "done"
    for name, fragment in expected.items():
        status, error = rows[name]
        assert status == "failed", (name, status, error)
        assert error and "\n" not in error and len(error) < 300, (name, error)
        assert fragment in error, (name, error)

    rc = main(["status", "--workdir", str(work), "--json"])
    st = json.loads(capsys.readouterr().out)
    assert rc == 0 and st["videos"]["failed"] == len(expected) and st["videos"]["done"] == 1
    assert {Path(f["path"]).name for f in st["failures"]} == set(expected)


def test_limits_reject_hostile_sizes(tmp_path):
    path = tmp_path / "big.mp4"
    generate_video(path, seed=2, seconds=1.0)
    with pytest.raises(VideoRejected, match="over the limit"):
        with VideoReader(path, MiningConfig(max_pixels=100 * 100)):
            pass
    with pytest.raises(VideoRejected, match="duration"):
        with VideoReader(path, MiningConfig(max_duration_s=0.5)):
            pass


def _gradient_frames(width: int, height: int, n: int) -> list[np.ndarray]:
    """Smooth moving gradients: they encode to a few hundred bytes a frame."""
    ys, xs = np.mgrid[0:height, 0:width]
    return [np.dstack([(xs * 255 // width + 8 * t) % 256, ys * 255 // height,
                       np.full_like(xs, 128)]).astype(np.uint8) for t in range(n)]


def test_frames_bigger_than_the_header_are_rejected(tmp_path):
    """A frame-size bomb: the header (first SPS) says 64x48, later frames are 160x128. Each
    decoded frame's size is checked before it is converted, so the limit holds mid-stream.
    Two raw H.264 streams one after the other are one valid stream whose size changes."""
    parts = [tmp_path / "small.h264", tmp_path / "big.h264"]
    write_h264(parts[0], _gradient_frames(64, 48, 5), fps=25)
    write_h264(parts[1], _gradient_frames(160, 128, 5), fps=25)
    bomb = tmp_path / "bomb.h264"
    bomb.write_bytes(parts[0].read_bytes() + parts[1].read_bytes())
    assert bomb.stat().st_size < 20_000

    cfg = MiningConfig(max_pixels=64 * 48)
    reason = r"^frame size 160x128 is over the limit of 3072 pixels \(max_pixels\)$"
    with VideoReader(bomb, cfg) as reader:
        assert (reader.info.width, reader.info.height) == (64, 48)   # the header passes
        with pytest.raises(VideoRejected, match=reason):
            for _ in reader.frames():
                pass
    with pytest.raises(VideoRejected, match=reason):
        decode_only(bomb, cfg)
    with pytest.raises(VideoRejected, match=reason):
        mine_video(bomb, cfg)
    # Under the default limit the size change itself is fine: every frame comes out at the
    # first frame's working size, and a raw stream without timestamps is sampled at 8 fps
    # (0.4 s of frames at 25 fps).
    with VideoReader(bomb, MiningConfig()) as reader:
        frames = list(reader.frames())
    assert reader.frames_decoded == 10 and [round(f.time, 2) for f in frames] == [0, 0.16, 0.28]
    assert {f.rgb.shape for f in frames} == {(48, 64, 3)}


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing")]) == 2
    assert main(["run", str(tmp_path), "--tracker", "nope", "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert err.count("vidmine-mine: error:") == 2 and "Traceback" not in err
    assert main(["status", "--workdir", str(tmp_path / "nothing-here")]) == 2


def test_sample_videos_give_tracks_and_a_contact_sheet(tmp_path, shared_data, capsys):
    """box.mp4 and cup.mp4 yield tracks; Megamind_bugy.avi (damaged frames) is mined too."""
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("box.mp4", "cup.mp4", "Megamind_bugy.avi"):
        (folder / name).symlink_to(shared_data / "videos" / name)
    work = tmp_path / "work"
    sheet = tmp_path / "tracks.png"
    rc = main(["run", str(folder), "--workdir", str(work), "--json", "--sheet", str(sheet),
               "--stable-s", "0", "--workers", "2"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["done"] == 3 and out["failed"] == 0, out
    store = Store(StorageConfig(workdir=str(work)))
    with store.index.read() as conn:
        per_video = dict(conn.execute(
            select(videos.c.path, videos.c.id)).all())
        counts = {Path(p).name: conn.execute(select(tracks.c.id).where(
            tracks.c.video_id == vid)).all() for p, vid in per_video.items()}
        frames = conn.execute(select(videos.c.frames_decoded).where(
            videos.c.path.like("%Megamind_bugy.avi"))).scalar_one()
    store.close()
    assert len(counts["box.mp4"]) >= 2 and len(counts["cup.mp4"]) >= 1, counts
    assert len(counts["Megamind_bugy.avi"]) >= 1 and frames >= 250
    assert out["contact_sheet"] == str(sheet) and sheet.stat().st_size > 10_000
    rc = store_main(["verify", "--workdir", str(work), "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["ok"] is True


def test_console_script_runs_as_a_module(tmp_path):
    res = subprocess.run([sys.executable, "-m", "vidmine.mining.cli", "status", "--json",
                          "--workdir", str(tmp_path / "none")], capture_output=True, text=True)
    assert res.returncode == 2 and res.stdout == "" and "error:" in res.stderr
