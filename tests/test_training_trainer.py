"""The trainer and vidmine-train: learning, checkpoints, exact resume, SIGTERM, DDP, errors."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_training_fixtures import SMALL, open_train_store
from vidmine.device import cpu_has_bf16, rank_device
from vidmine.errors import UsageError
from vidmine.training.backbones import CheckpointError, Trunk, load_backbone, save_backbone
from vidmine.training.cli import main
from vidmine.training.config import TrainConfig
from vidmine.training.models import NO_OWNER
from vidmine.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def train_store(tmp_path):
    yield from open_train_store(tmp_path)


def _losses(out: Path) -> list[float]:
    with (out / "log.csv").open() as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


@pytest.mark.slow
def test_triplet_training_lowers_the_loss_and_checkpoint_loads(train_store, tmp_path):
    store, _ = train_store
    cfg = TrainConfig(**{**SMALL, "objective": "triplet", "positives": "intra:1,tracker:1",
                         "steps": 20, "lr": 1.0})
    trainer = Trainer(cfg, store, tmp_path / "out")
    summary = trainer.fit(progress=False)
    assert summary["status"] == "done" and summary["step"] == 20
    losses = _losses(tmp_path / "out")
    assert len(losses) == 20
    assert np.mean(losses[-6:]) < 0.8 * np.mean(losses[:6])
    # The checkpoint holds the trained weights exactly, whatever device trained them.
    trunk = load_backbone(tmp_path / "out" / "final.pt").eval()
    trained = trainer.net.trunk.state_dict()
    assert trunk.state_dict().keys() == trained.keys()
    for name, value in trunk.state_dict().items():
        assert torch.equal(value, trained[name].cpu()), name
    with torch.no_grad():
        assert torch.isfinite(trunk(torch.randn(2, 3, 32, 32))).all()
    with store.index.read() as conn:
        from sqlalchemy import select

        from vidmine.storage.schema import runs
        row = conn.execute(select(runs.c.status, runs.c.summary).where(
            runs.c.id == summary["run_id"])).one()
    assert row.status == "done" and json.loads(row.summary)["checkpoint"].endswith("final.pt")


@pytest.mark.parametrize("objective,workers,exclude", [("moco", 0, "video"), ("triplet", 2, "none")])
def test_resume_is_exact(train_store, tmp_path, objective, workers, exclude):
    """N steps at once == N/2 steps, a fresh process state, then N/2 more from the checkpoint."""
    store, _ = train_store
    cfg = TrainConfig(**{**SMALL, "objective": objective, "positives": "intra:1,temporal:1",
                         "steps": 4, "workers": workers, "warmup_steps": 2,
                         "queue_exclude": exclude})
    straight = Trainer(cfg, store, tmp_path / "straight")
    straight.fit(progress=False)
    half = Trainer(cfg, store, tmp_path / "halves")
    assert half.fit(progress=False, until=2)["status"] == "stopped"
    assert not (tmp_path / "halves" / "final.pt").exists()
    with pytest.raises(UsageError, match="already holds a checkpoint; pass --resume"):
        Trainer(cfg, store, tmp_path / "halves")
    torch.manual_seed(12345)  # whatever the process did in between must not matter
    resumed = Trainer(cfg, store, tmp_path / "halves", resume=True)
    assert resumed.step == 2
    resumed.fit(progress=False)
    a, b = straight.net.state_dict(), resumed.net.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "halves")
    if exclude == "video":  # the queue holds the videos of the keys it was given
        videos = set(straight.data.table.video.tolist())
        owners = set(straight.net.queue_owner.tolist()) - {NO_OWNER}
        assert owners and owners <= videos


@pytest.mark.parametrize("objective", ["triplet", "moco"])
def test_init_starts_the_trunk_from_a_checkpoint(train_store, tmp_path, objective):
    store, _ = train_store
    start = Trunk("resnet18")
    torch.nn.init.normal_(start.net.conv1.weight)  # weights no fresh network is drawn with
    save_backbone(tmp_path / "first.pt", start)
    cfg = TrainConfig(**{**SMALL, "objective": objective, "positives": "intra:1", "steps": 1,
                         "init": str(tmp_path / "first.pt"), "device": "cpu", "amp": False})
    trainer = Trainer(cfg, store, tmp_path / "out")
    encoders = [trainer.net.trunk]
    if objective == "moco":  # the key encoder starts as the query encoder
        encoders.append(trainer.net.encoder_k[0])
    for trunk in encoders:
        for name, value in start.state_dict().items():
            assert torch.equal(trunk.state_dict()[name], value), name
    trainer.fit(progress=False)  # and it trains on from there
    assert not torch.equal(load_backbone(tmp_path / "out" / "final.pt").net.conv1.weight,
                           start.net.conv1.weight)

    save_backbone(tmp_path / "vgg.pt", Trunk("vgg16"))
    with pytest.raises(CheckpointError, match="holds a vgg16, not the resnet18"):
        Trainer(TrainConfig(**{**cfg.__dict__, "init": str(tmp_path / "vgg.pt")}), store,
                tmp_path / "out2")


def _cli_args(workdir: Path, *extra: str) -> list[str]:
    return ["--workdir", str(workdir), "--image-size", "32", "--batch-size", "8",
            "--workers", "0", "--moco-queue", "64", "--min-gap", "1", "--log-every", "1",
            "--warmup-steps", "0", *extra]


def test_sigterm_writes_a_checkpoint_and_resume_continues(train_store, tmp_path):
    store, _ = train_store
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "vidmine.training.cli", *_cli_args(
        store.root, "--objective", "moco", "--positives", "tracker", "--steps", "1000",
        "--checkpoint-every", "0", "--out", str(out))]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if (out / "log.csv").is_file() and len(_losses(out)) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    ckpt = torch.load(out / "last.pt", weights_only=True)
    step = ckpt["step"]
    assert 2 <= step < 1000 and ckpt["training"]["step"] == step
    assert load_backbone(out / "last.pt").name == "resnet18"
    # The same job, cut shorter, resumes from that step and finishes.
    rc = main(_cli_args(store.root, "--objective", "moco", "--positives", "tracker",
                        "--steps", str(step + 2), "--out", str(out), "--resume", "--json"))
    assert rc == 0 and (out / "final.pt").is_file()
    assert torch.load(out / "final.pt", weights_only=True)["step"] == step + 2


@pytest.mark.slow
def test_ddp_two_gloo_processes(train_store, tmp_path):
    store, _ = train_store
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", "2", "-m", "vidmine.training.cli", *_cli_args(
               store.root, "--objective", "moco", "--positives", "intra", "--steps", "3",
               "--device", "cpu", "--out", str(out), "--json")]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300,
                         check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert summary["world_size"] == 2 and summary["status"] == "done"
    ckpt = torch.load(out / "final.pt", weights_only=True)
    # Both ranks' keys reach the queue: 3 steps x 8 pairs x 2 processes.
    assert ckpt["training"]["model"]["queue_ptr"].item() == 48 % 64
    assert load_backbone(out / "final.pt").name == "resnet18"


def test_user_errors_are_one_line(train_store, tmp_path, capsys):
    store, _ = train_store
    with pytest.raises(SystemExit):
        main(["--help"])
    capsys.readouterr()
    cases = [
        (["--objective", "moco", "--positives", "transitive", "--pairs-run", "999"],
         "no transitive pairs of graph run 999"),
        (["--positives", "optical:1"], "unknown positive source 'optical'"),
        (["--backbone", "alexnet"], "backbone='alexnet': choose one of"),
        (["--resume", "--out", str(tmp_path / "none")], "nothing to resume"),
    ]
    for extra, message in cases:
        assert main(_cli_args(store.root, *extra)) == 2
        err = capsys.readouterr().err
        assert message in err and err.startswith("vidmine-train: error:") and err.count("\n") == 1
    assert main(["--workdir", str(tmp_path / "missing")]) == 2
    assert "no vidmine work directory" in capsys.readouterr().err


def test_sources_json(train_store, capsys):
    store, truth = train_store
    assert main(["sources", "--workdir", str(store.root), "--json", "--min-gap", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pairs"]["intra"] == truth["n_intra"] and report["pairs"]["none"] == 36
    assert report["clustered_crops"] == 36


def test_each_torchrun_process_gets_its_own_gpu_or_a_clear_error():
    assert rank_device("auto", 0, gpus=0) == "cpu"
    assert rank_device("auto", 1, gpus=0) == "cpu"
    assert rank_device("auto", 1, gpus=2) == "cuda:1"
    assert rank_device("cuda", 1, gpus=2) == "cuda:1"
    assert rank_device("cpu", 1, gpus=2) == "cpu"
    assert rank_device("cuda:0", 1, gpus=2) == "cuda:0"
    # Two processes on a one-GPU machine (seen on an H200: "invalid device ordinal").
    with pytest.raises(UsageError, match="no GPU of its own.*--device cpu"):
        rank_device("auto", 1, gpus=1)
    with pytest.raises(UsageError, match="CUDA is not available"):
        rank_device("cuda", 0, gpus=0)
    with pytest.raises(UsageError, match="CUDA is not available"):
        rank_device("cuda:1", 0, gpus=0)


def test_bf16_only_on_cpus_that_compute_it(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n")
    assert not cpu_has_bf16.__wrapped__(str(info))  # oneDNN would emulate bf16: slower
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_has_bf16.__wrapped__(str(info))
    info.write_text("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert cpu_has_bf16.__wrapped__(str(info))
    assert not cpu_has_bf16.__wrapped__(str(tmp_path / "absent"))  # not Linux


@pytest.mark.parametrize("amp", [True, False])
def test_cpu_training_precision_follows_the_cpu(train_store, tmp_path, amp):
    store, _ = train_store
    cfg = TrainConfig(**{**SMALL, "positives": "none:1", "steps": 2, "device": "cpu", "amp": amp})
    trainer = Trainer(cfg, store, tmp_path / "out")
    summary = trainer.fit(progress=False)
    bf16 = amp and cpu_has_bf16()
    assert summary["precision"] == ("bf16" if bf16 else "fp32")
    assert trainer.channels_last == bf16
    # autocast computes in bf16 but the weights the optimizer steps stay fp32
    assert all(p.dtype == torch.float32 for p in trainer.net.parameters())
    assert np.isfinite(_losses(tmp_path / "out")).all()


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="the GPU recipe needs a CUDA device; this machine has none")
@pytest.mark.parametrize("gpu_decode", ["nvjpeg", "workers"])
def test_gpu_recipe_trains_with_either_decoder(train_store, tmp_path, gpu_decode):
    store, _ = train_store
    cfg = TrainConfig(**{**SMALL, "objective": "moco", "positives": "intra", "steps": 3,
                         "workers": 1, "gpu_decode": gpu_decode})
    trainer = Trainer(cfg, store, tmp_path / "out")
    assert trainer.gpu_augment and trainer.device.type == "cuda"
    assert trainer.fit(progress=False)["status"] == "done"
    assert all(np.isfinite(_losses(tmp_path / "out")))
