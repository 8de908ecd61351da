"""Retrieval, probes, invariance-set layouts and the vidmine-eval CLI on real crops."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.factories import fill_store
from vidmine.descriptors import FLOORS
from vidmine.evaluation import sets
from vidmine.evaluation.cli import main as eval_main
from vidmine.evaluation.probe import knn_accuracy, linear_probe_accuracy
from vidmine.evaluation.retrieval import retrieval_metrics
from vidmine.training.backbones import Trunk, save_backbone


def _brute_force(features, labels, ks=(1, 5)):
    x = features / np.linalg.norm(features, axis=1, keepdims=True)
    recalls, aps = {k: [] for k in ks}, []
    for q in range(len(x)):
        others = [j for j in range(len(x)) if j != q]
        ranked = sorted(others, key=lambda j: -float(x[q] @ x[j]))
        rel = [labels[j] == labels[q] for j in ranked]
        if not any(rel):
            continue
        for k in ks:
            recalls[k].append(any(rel[:k]))
        hits, precisions = 0, []
        for rank, r in enumerate(rel, 1):
            if r:
                hits += 1
                precisions.append(hits / rank)
        aps.append(np.mean(precisions))
    return {**{f"recall@{k}": np.mean(v) for k, v in recalls.items()}, "mAP": np.mean(aps)}


def test_retrieval_matches_brute_force():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 12, 80)
    feats = rng.normal(size=(80, 16)) + np.eye(16)[labels % 16] * 1.5
    got = retrieval_metrics(feats, labels, chunk=17)
    want = _brute_force(feats, labels)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6)


def test_probes_separate_separable_features_and_not_noise():
    rng = np.random.default_rng(0)
    y_tr, y_va = rng.integers(0, 3, 150), rng.integers(0, 3, 60)
    centres = rng.normal(size=(3, 32)) * 4
    x_tr = centres[y_tr] + rng.normal(size=(150, 32))
    x_va = centres[y_va] + rng.normal(size=(60, 32))
    assert knn_accuracy(x_tr, y_tr, x_va, y_va) > 0.95
    assert linear_probe_accuracy(x_tr, y_tr, x_va, y_va) > 0.95
    noise = rng.normal(size=(60, 32))
    assert linear_probe_accuracy(x_tr, y_tr, noise, y_va) < 0.6


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


def test_folder_aloi_and_got10k_layouts(tmp_path):
    rng = np.random.default_rng(0)
    img = lambda: rng.integers(0, 255, (24, 24, 3), np.uint8)  # noqa: E731
    for c in ("cat", "dog"):
        for s in ("a", "b"):
            for i in range(3):
                _write(tmp_path / "generic" / c / s / f"{i}.png", img())
    g = sets.from_folder(tmp_path / "generic")
    assert len(g.images) == 12 and len(np.unique(g.set_ids)) == 4 and len(np.unique(g.class_ids)) == 2

    for obj in (1, 2):
        for r in (0, 5, 10):
            _write(tmp_path / "aloi" / str(obj) / f"{obj}_r{r}.png", img())
        for light in (1, 2, 3):
            for cam in (1, 2):
                _write(tmp_path / "aloi" / str(obj) / f"{obj}_l{light}c{cam}.png", img())
    view = sets.aloi(tmp_path / "aloi", "viewpoint")
    assert len(view.images) == 6 and len(np.unique(view.set_ids)) == 2
    light = sets.aloi(tmp_path / "aloi", "illumination-direction")
    assert len(light.images) == 12 and len(np.unique(light.set_ids)) == 4
    assert len(np.unique(light.class_ids)) == 2

    seq = tmp_path / "got" / "GOT-10k_Val_000001"
    for f in range(6):
        _write(seq / f"{f + 1:08d}.jpg", rng.integers(0, 255, (60, 80, 3), np.uint8))
    (seq / "groundtruth.txt").write_text("\n".join("10,10,30,20" for _ in range(6)))
    (seq / "cover.label").write_text("\n".join(["8", "0", "6", "4", "2", "8"]))
    (seq / "meta_info.ini").write_text("[METAINFO]\nmajor_class: cat\n")
    got = sets.got10k(tmp_path / "got")
    assert len(got.images) == 5  # the fully occluded (cover 0) frame is left out
    assert got.images[0].shape == (20, 30, 3)


def test_sets_from_store_are_labelled_and_shaped(sqlite_store, shared_data):
    fill_store(sqlite_store, n_videos=3, tracks_per_video=3, crops_per_track=5,
               images_dir=shared_data / "images")
    made = sets.store_sets(sqlite_store, variants=4)
    names = {s.name: s for s in made}
    view = names["viewpoint (held-out tracks)"]
    assert not view.synthetic and len(np.unique(view.set_ids)) == 9 and len(view.images) == 45
    occ = names["occlusion (held-out crops)"]
    assert occ.synthetic and occ.label.endswith("[synthetic]") and len(occ.images) == 36


@pytest.mark.slow
def test_cli_compares_checkpoints_and_the_floor(tmp_path, shared_data, capsys):
    from vidmine.storage.store import StorageConfig, Store
    work = tmp_path / "work"
    store = Store(StorageConfig(workdir=str(work)))
    fill_store(store, n_videos=3, tracks_per_video=3, crops_per_track=4,
               images_dir=shared_data / "images")
    torch.manual_seed(1)
    ckpt = tmp_path / "mine.pt"
    save_backbone(ckpt, Trunk("resnet18"))
    common = ["--workdir", str(work), "--checkpoint", str(ckpt), "--size", "64", "--json"]

    assert eval_main(["ris", *common, "--variants", "3", "--out", str(tmp_path / "r")]) == 0
    ris = json.loads(capsys.readouterr().out)
    models = {r["model"] for r in ris["results"]}
    assert models == {"mine", "untrained resnet18", *(f"{f} (floor)" for f in FLOORS)}
    assert {r["invariance"] for r in ris["results"]} >= {"occlusion (held-out crops) [synthetic]"}
    assert all(0 <= r["top10"] <= 100 for r in ris["results"])
    assert all(Path(p).is_file() for p in ris["charts"])

    assert eval_main(["retrieval", *common]) == 0
    ret = json.loads(capsys.readouterr().out)
    assert ret["tracks"] == 9 and all(0 < r["mAP"] <= 1 for r in ret["results"])

    data = tmp_path / "folder"
    for name in ("fruits.jpg", "baboon.jpg"):
        photo = cv2.imread(str(shared_data / "images" / name))
        for i in range(6):
            _write(data / name[:-4] / f"{i}.png", photo[i * 20:i * 20 + 120, i * 20:i * 20 + 120])
    assert eval_main(["probe", *common, "--data", str(data)]) == 0
    probe = json.loads(capsys.readouterr().out)
    assert probe["classes"] == ["baboon", "fruits"] and probe["val"] == 2


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert eval_main(["ris", "--workdir", str(tmp_path / "none"), "--checkpoint",
                      str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidmine-eval: error:") and "checkpoint not found" in err
    assert "\n" not in err
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    assert eval_main(["probe", "--checkpoint", str(bad), "--data", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err
    assert eval_main(["ris", "--workdir", str(tmp_path / "none")]) == 2
    assert "no vidmine work directory" in capsys.readouterr().err
