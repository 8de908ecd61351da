"""Hostile input, as a user who means harm or has bad luck would give it: names that are not
UTF-8 or hold terminal escapes, links and FIFOs, nonsense numbers, damaged and lost shards,
truncated checkpoints, a read-only store. Every case is built here from real files and real
stores. Each must end by itself with one line (no traceback), mine the good videos beside
the bad ones, and lose nothing already stored."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.factories import fill_store
from vidmine.evaluation.cli import main as eval_main
from vidmine.graph.cli import main as graph_main
from vidmine.mining.cli import main as mine_main
from vidmine.mining.synthetic import generate_video
from vidmine.storage.cli import main as store_main
from vidmine.storage.schema import crops, runs, videos
from vidmine.storage.store import StorageConfig, Store
from vidmine.training.backbones import Trunk, save_backbone
from vidmine.training.cli import main as train_main

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = ["--steps", "2", "--batch-size", "4", "--image-size", "32", "--workers", "0",
              "--warmup-steps", "0", "--moco-queue", "16", "--backbone", "resnet18", "--json"]
ESCAPE_NAME = "\x1b[2J\rALL GOOD.mp4"
NEWLINE_NAME = "two\nlines.mp4"
NOT_UTF8_NAME = b"bad\xff\xfe.mp4"


def _cli(module: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT,
                          capture_output=True, timeout=timeout)


def _one_line_error(stderr: str, *words: str) -> None:
    lines = [line for line in stderr.strip().splitlines() if "warning" not in line]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert all(w in lines[0] for w in words), lines[0]


# -- a folder of every bad kind of file, beside good videos ---------------------------------

@pytest.fixture
def hostile_folder(tmp_path) -> Path:
    folder = tmp_path / "videos"
    folder.mkdir()
    generate_video(folder / "good.mp4", seed=1, seconds=2.0)
    generate_video(folder / NEWLINE_NAME, seed=2, seconds=2.0)
    (folder / ESCAPE_NAME).write_text("a text file that clears the screen when printed\n")
    generate_video(os.fsdecode(os.path.join(os.fsencode(folder), NOT_UTF8_NAME)), seed=3,
                   seconds=2.0)
    os.symlink(folder / "nowhere.mp4", folder / "dangling.mp4")
    os.symlink(folder / "loop.mp4", folder / "loop.mp4")
    os.mkfifo(folder / "pipe.mp4")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "sock.mp4"))
    sock.close()
    os.symlink(folder / "good.mp4", folder / "link_to_good.mp4")   # a copy by content: skipped
    (folder / "notes.mp4").write_text("not a video\n" * 50)
    good = (folder / "good.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(good[: len(good) // 4])
    return folder


@pytest.mark.slow
def test_a_folder_of_hostile_files_is_mined_to_the_end(tmp_path, hostile_folder):
    work = tmp_path / "work"
    proc = _cli("vidmine.mining.cli", "run", hostile_folder, "--workdir", work, "--workers", "1",
                "--stable-s", "0", "--sheet", "none", timeout=240)
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "\x1b" not in out and "\r" not in out
    assert "\\x1b[2J\\rALL GOOD.mp4" in out        # printed escaped, never interpreted
    store = Store(StorageConfig(workdir=str(work)))
    with store.index.read() as conn:
        rows = {r.path.rsplit("/", 1)[-1]: r for r in conn.execute(select(videos))}
    assert {n for n, r in rows.items() if r.status == "done"} == {
        "good.mp4", NEWLINE_NAME, "bad\\xff\\xfe.mp4"}
    assert rows["bad\\xff\\xfe.mp4"].path_bytes.endswith(NOT_UTF8_NAME)
    reasons = {n: r.error for n, r in rows.items() if r.status in ("failed", "skipped")}
    assert "FIFO" in reasons["pipe.mp4"] and "socket" in reasons["sock.mp4"]
    assert "dangling" in reasons["dangling.mp4"] and "loop" in reasons["loop.mp4"]
    assert "same content" in reasons["link_to_good.mp4"]
    assert reasons["notes.mp4"] and reasons["truncated.mp4"] and reasons[ESCAPE_NAME]
    assert "a FIFO" in out and "dangling" in out      # the run's summary names them too
    with store.index.read() as conn:
        mined = conn.execute(select(runs.c.status).where(runs.c.kind == "mine")).scalars().all()
    assert mined == ["done"]

    status = _cli("vidmine.mining.cli", "status", "--workdir", work)
    text = status.stdout.decode()
    assert status.returncode == 0 and "\x1b" not in text
    assert "a FIFO" in text and "\\x1b[2J\\rALL GOOD.mp4" in text
    # The dangling link gets its target: the next run mines it (a copy of good.mp4 by
    # content, so it ends as a duplicate, not as 'not a regular file').
    shutil.copy(hostile_folder / "good.mp4", hostile_folder / "nowhere.mp4")
    again = _cli("vidmine.mining.cli", "run", hostile_folder, "--workdir", work, "--workers", "1",
                 "--stable-s", "0", "--sheet", "none", "--json", timeout=240)
    assert again.returncode == 0, again.stderr.decode()
    with store.index.read() as conn:
        error = conn.execute(select(videos.c.error).where(
            videos.c.path.endswith("dangling.mp4"))).scalar_one()
    assert "same content" in error
    store.close()


# -- numbers and settings ------------------------------------------------------------------

@pytest.mark.parametrize("main, argv, setting", [
    (train_main, ["train", "--lr", "nan"], "lr"),
    (train_main, ["train", "--lr", "-0.1"], "lr"),
    (train_main, ["train", "--steps", "-5"], "steps"),
    (train_main, ["train", "--batch-size", "0"], "batch_size"),
    (train_main, ["train", "--image-size", "0"], "image_size"),
    (train_main, ["train", "--workers", "-1"], "workers"),
    (train_main, ["train", "--moco-momentum", "inf"], "moco_momentum"),
    (mine_main, ["run", ".", "--sample-fps", "nan"], "sample_fps"),
    (mine_main, ["run", ".", "--sample-fps", "inf"], "sample_fps"),
    (mine_main, ["run", ".", "--workers", "3.7"], "workers"),
    (mine_main, ["run", ".", "--decode-thread-type", "BOGUS"], "decode_thread_type"),
    (mine_main, ["run", ".", "--working-long-side", "0"], "working_long_side"),
    (graph_main, ["build", "--val-fraction", "1.5"], "val_fraction"),
    (eval_main, ["ris", "--size", "-3"], "size"),
    (mine_main, ["synth", "out", "--videos", "-3"], "--videos"),
    (mine_main, ["synth-sets", "out", "--objects-per-category", "0"], "--objects-per-category"),
    (graph_main, ["sheet", "tracks", "--n", "-1"], "--n"),
    (graph_main, ["show", "1", "--radius", "-1"], "--radius"),
])
def test_nonsense_numbers_are_refused_with_one_line(tmp_path, capsys, main, argv, setting):
    assert main([*argv, "--workdir", str(tmp_path / "w")]) == 2
    _one_line_error(capsys.readouterr().err, setting)
    assert not (tmp_path / "w").exists() or not list((tmp_path / "w").glob("shards/*"))


def test_nonsense_in_the_toml_file_is_refused_with_one_line(tmp_path, capsys):
    config = tmp_path / "vidmine.toml"
    config.write_text("[mining]\nworkers = 3.7\n")
    assert mine_main(["run", str(tmp_path), "--config", str(config)]) == 2
    _one_line_error(capsys.readouterr().err, "workers")
    config.write_text("[training]\nlr = nan\n")
    assert train_main(["train", "--config", str(config), "--workdir", str(tmp_path)]) == 2
    _one_line_error(capsys.readouterr().err, "lr")


def test_a_bad_setting_fails_nothing_and_retry_requeues_failed_videos(tmp_path, capsys):
    folder = tmp_path / "videos"
    generate_video(folder / "a.mp4", seed=1, seconds=1.5)
    w = ["--workdir", str(tmp_path / "work")]
    # max_pixels far too small: a setting that fails every video, for good
    assert mine_main(["run", str(folder), *w, "--workers", "1", "--stable-s", "0",
                      "--sheet", "none", "--max-pixels", "100", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["failed"] == 1
    assert mine_main(["retry", *w, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["requeued"] == 1
    assert mine_main(["run", str(folder), *w, "--workers", "1", "--stable-s", "0",
                      "--sheet", "none", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["done"] == 1


# -- damaged stores ------------------------------------------------------------------------

def _shard_file(store: Store) -> Path:
    (shard,) = [p for p in store.shards_dir.iterdir() if (p / "data.mdb").is_file()]
    return shard / "data.mdb"


def _damage_a_page(data: Path) -> None:
    with open(data, "r+b") as fh:
        fh.seek(data.stat().st_size // 2 // 4096 * 4096)
        fh.write(b"\xab" * 8192)


def _zero_crop(store: Store, crop_id: int) -> None:
    """Overwrite the bytes of one stored crop with zeros, in place in the LMDB file."""
    with store.index.read() as conn:
        shard, key = conn.execute(select(crops.c.shard, crops.c.key)
                                  .where(crops.c.id == crop_id)).one()
    blob = store.reader.get(shard, key)
    store.close()
    data = _shard_file(store)
    raw = data.read_bytes()
    at = raw.find(blob)
    assert at > 0 and raw.find(blob, at + 1) < 0
    with open(data, "r+b") as fh:
        fh.seek(at)
        fh.write(bytes(len(blob)))


@pytest.fixture
def filled(tmp_path) -> tuple[Path, Store]:
    work = tmp_path / "work"
    store = Store(StorageConfig(workdir=str(work)))
    # 220 crops, 110 graph nodes: one bad crop stays under the 1 % that jobs tolerate
    fill_store(store, n_videos=11, tracks_per_video=5, crops_per_track=4, crop_size=96)
    assert graph_main(["build", "--workdir", str(work), "--json"]) == 0
    return work, store


def test_a_damaged_page_is_named_repaired_and_training_runs_again(filled, tmp_path, capsys):
    work, store = filled
    capsys.readouterr()
    store.close()
    _damage_a_page(_shard_file(store))
    w = ["--workdir", str(work)]

    assert store_main(["verify", *w]) == 1
    out = capsys.readouterr().out
    assert "damaged LMDB page" in out and "crop " in out and "--repair" in out
    # Training on the damaged store skips what it cannot read, naming it, and stops with one
    # line once more than 1 % of the crops are unreadable; never a traceback.
    code = train_main(["train", *w, "--out", str(tmp_path / "t0"), "--positives", "none:1",
                       *TINY_TRAIN[4:], "--steps", "60", "--batch-size", "8"])
    err = capsys.readouterr().err
    assert "skipped crop" in err and "Traceback" not in err
    if code != 0:
        assert code == 2
        _one_line_error(err, "verify --repair")

    assert store_main(["verify", *w, "--repair", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["repaired_rows"] == report["damaged_crops"] > 0
    assert report["requeued_videos"] >= 1 and len(report["quarantined"]) == 1
    assert set(report["removed"]) == {"tracks", "edges", "pairs"}
    assert store_main(["verify", *w, "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["ok"] and after["rows"] == report["rows"] - report["repaired_rows"]
    assert train_main(["train", *w, "--out", str(tmp_path / "t1"), "--positives", "intra",
                       *TINY_TRAIN]) == 0


def test_zeroed_crop_bytes_are_found_and_skipped_by_training_and_export(filled, tmp_path, capsys):
    work, store = filled
    with store.index.read() as conn:
        crop_id = conn.execute(select(crops.c.id).order_by(crops.c.id).limit(1)).scalar_one()
    _zero_crop(store, crop_id)
    w = ["--workdir", str(work)]
    capsys.readouterr()
    assert store_main(["verify", *w, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [d["crop"] for d in report["damaged"]] == [crop_id]
    assert report["damaged"][0]["reason"] == "not a decodable image"

    # 1 crop of 220 is under the 1 % cap: skipped with a warning naming it
    # none:1 pairs each crop with itself: 100 steps of 8 draw 800 of 220 crops (seeded)
    assert train_main(["train", *w, "--out", str(tmp_path / "t"), "--positives", "none:1",
                       *TINY_TRAIN[4:], "--steps", "100", "--batch-size", "8"]) == 0
    assert f"skipped crop {crop_id}" in capsys.readouterr().err
    assert graph_main(["export", *w, "--html", str(tmp_path / "html"), "--clusters", "200",
                       "--pairs", "200"]) == 0
    assert f"skipped crop {crop_id}" in capsys.readouterr().err
    # A graph needs a vector for every node: embedding stops with one line naming the crop.
    assert graph_main(["embed", *w, "--all"]) == 2
    _one_line_error(capsys.readouterr().err, f"crop {crop_id}", "verify --repair")


@pytest.mark.slow
def test_a_lost_shard_is_repaired_and_mined_again(tmp_path, capsys):
    folder, work = tmp_path / "videos", tmp_path / "work"
    for seed in range(3):
        generate_video(folder / f"v{seed}.mp4", seed=seed, seconds=3.0)
    w = ["--workdir", str(work)]
    mine = ["run", str(folder), *w, "--workers", "1", "--stable-s", "0", "--sheet", "none",
            "--json"]
    assert mine_main(mine) == 0
    before = json.loads(capsys.readouterr().out)["crops"]
    assert before > 0 and graph_main(["build", *w, "--json"]) == 0
    edges_before = json.loads(capsys.readouterr().out)
    store = Store(StorageConfig(workdir=str(work)))
    shutil.rmtree(_shard_file(store).parent)

    assert store_main(["verify", *w]) == 1
    assert "bytes missing" in capsys.readouterr().out
    assert store_main(["verify", *w, "--repair", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["repaired_rows"] > 0 and report["requeued_videos"] == 3
    assert report["removed"]["edges"] > 0 or edges_before.get("edges", {}) == {}
    assert mine_main(mine) == 0
    assert json.loads(capsys.readouterr().out)["crops"] >= 0.8 * before
    assert store_main(["verify", *w]) == 0
    assert graph_main(["build", *w, "--json"]) == 0
    assert train_main(["train", *w, "--out", str(tmp_path / "t"), "--positives", "intra",
                       *TINY_TRAIN]) == 0
    store.close()


# -- checkpoints, ids, read-only stores, run records ---------------------------------------

def test_bad_checkpoints_and_ids_are_one_line_errors(filled, tmp_path, capsys):
    work, _ = filled
    w = ["--workdir", str(work)]
    out = tmp_path / "t"
    assert train_main(["train", *w, "--out", str(out), "--positives", "intra", *TINY_TRAIN]) == 0
    last = out / "last.pt"
    last.write_bytes(last.read_bytes()[:2000])            # truncated
    capsys.readouterr()
    assert train_main(["train", *w, "--out", str(out), "--resume", "--positives", "intra",
                       *TINY_TRAIN]) == 2
    _one_line_error(capsys.readouterr().err, "last.pt")

    mislabelled = tmp_path / "mislabelled.pt"
    save_backbone(mislabelled, Trunk("resnet18"))
    import torch
    payload = torch.load(mislabelled, weights_only=True)
    payload["backbone"] = "resnet50"
    torch.save(payload, mislabelled)
    assert eval_main(["retrieval", *w, "--checkpoint", str(mislabelled), "--size", "32"]) == 2
    _one_line_error(capsys.readouterr().err, "resnet50")
    assert graph_main(["embed", *w, "--embedding-model", str(last)]) == 2
    _one_line_error(capsys.readouterr().err, "last.pt")

    assert graph_main(["show", "999999999999999999999999", *w]) == 2
    _one_line_error(capsys.readouterr().err)
    assert graph_main(["explain", "99999999999999999999999,1", *w]) == 2
    _one_line_error(capsys.readouterr().err)


def test_a_checkpoint_that_holds_code_is_refused_without_running_it(filled, tmp_path, capsys):
    import torch
    work, _ = filled
    ran = tmp_path / "the-code-ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {ran}",)
    hostile = tmp_path / "hostile.pt"
    torch.save({"format": "vidmine-backbone-v1", "backbone": "resnet18", "extra": Payload()},
               hostile)
    junk, zeros = tmp_path / "junk.pt", tmp_path / "zeros.pt"
    junk.write_bytes(bytes(range(256)) * 4)
    zeros.write_bytes(bytes(1000))
    for path, words in [(hostile, ("of tensors only", "posix.system", "never runs code")),
                        (junk, ("of tensors only", "Unsupported operand", "never runs code")),
                        (zeros, ("not a loadable PyTorch checkpoint", "legacy .tar format"))]:
        capsys.readouterr()
        assert train_main(["train", "--workdir", str(work), "--out", str(tmp_path / "t"),
                           "--positives", "intra", "--init", str(path), *TINY_TRAIN]) == 2
        err = capsys.readouterr().err
        _one_line_error(err, path.name, *words)
        assert "False" not in err   # torch's advice to load it unsafely is left out
    assert not ran.exists()


def test_a_read_only_store_answers_the_commands_that_only_read(filled, tmp_path, capsys):
    work, store = filled
    store.close()
    mount = tmp_path / "ro"
    mount.mkdir()
    ok = subprocess.run(["mount", "--bind", str(work), str(mount)], capture_output=True)
    if ok.returncode != 0:
        pytest.skip(f"cannot bind-mount here (needs root): {ok.stderr.decode().strip()}")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)]).returncode != 0:
            pytest.skip("cannot remount read-only here")
        w = ["--workdir", str(mount)]
        capsys.readouterr()
        assert mine_main(["status", *w, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["crops"] == 220
        assert graph_main(["stats", *w, "--json"]) == 0
        assert graph_main(["show", "1", *w, "--json"]) == 0
        assert graph_main(["export", *w, "--html", str(tmp_path / "html")]) == 0
        assert eval_main(["retrieval", *w, "--size", "32", "--out", str(tmp_path / "r")]) == 0
        assert store_main(["verify", *w, "--json"]) == 0
        capsys.readouterr()
        # writing fails with one line, and nothing on the mount changed
        assert graph_main(["build", *w, "--rebuild"]) == 2
        _one_line_error(capsys.readouterr().err)
        assert store_main(["verify", *w, "--repair"]) == 2
        _one_line_error(capsys.readouterr().err, "read-only")
    finally:
        subprocess.run(["umount", str(mount)])


def test_a_mining_run_that_raises_ends_failed(tmp_path, monkeypatch, capsys):
    from vidmine.mining import executors

    def broken(*args, **kwargs):
        raise RuntimeError("the executor broke")

    monkeypatch.setattr(executors, "run_local", broken)
    folder = tmp_path / "videos"
    folder.mkdir()
    with pytest.raises(RuntimeError):
        mine_main(["run", str(folder), "--workdir", str(tmp_path / "w")])
    store = Store(StorageConfig(workdir=str(tmp_path / "w")))
    with store.index.read() as conn:
        status, summary = conn.execute(select(runs.c.status, runs.c.summary)).one()
    assert status == "failed" and "the executor broke" in summary
