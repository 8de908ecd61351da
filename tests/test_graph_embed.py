"""Crop embeddings: the hand-crafted descriptor and a network loaded from a checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sqlalchemy import select

from tests.factories import fill_store
from tests.test_graph_build import IMAGES
from vidmine.descriptors import handcrafted_descriptor
from vidmine.errors import UsageError
from vidmine.graph.build import build
from vidmine.graph.config import GraphConfig
from vidmine.graph.embed import embed, load_embeddings
from vidmine.storage.schema import embedding_sets, runs
from vidmine.training.backbones import Trunk, save_backbone


def test_handcrafted_descriptor_puts_one_instance_closer_than_others(sqlite_store):
    truth = fill_store(sqlite_store, n_videos=6, tracks_per_video=3, crops_per_track=5, seed=0,
                       images_dir=IMAGES)
    embed(sqlite_store, GraphConfig(), progress=False)
    emb = load_embeddings(sqlite_store)
    assert emb.model == "handcrafted" and emb.vectors.shape == (90, 336)
    assert np.allclose(np.linalg.norm(emb.vectors, axis=1), 1, atol=1e-5)
    instance = np.array([truth["instance"][int(i)] for i in emb.crop_ids])
    sim = emb.vectors @ emb.vectors.T
    same = instance[:, None] == instance[None, :]
    off_diagonal = ~np.eye(len(instance), dtype=bool)
    assert sim[same & off_diagonal].mean() > sim[~same].mean() + 0.1
    np.fill_diagonal(sim, -np.inf)
    nearest_same = same[np.arange(len(instance)), sim.argmax(1)].mean()
    chance = same[off_diagonal].mean()
    assert nearest_same > 0.8 > 3 * chance


def test_handcrafted_descriptor_ignores_size_and_is_batch_independent():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (80, 120, 3), np.uint8)
    one = handcrafted_descriptor([img])
    many = handcrafted_descriptor([rng.integers(0, 255, (30, 30, 3), np.uint8), img])
    assert np.allclose(one[0], many[1], atol=1e-6)
    assert np.isfinite(handcrafted_descriptor([np.zeros((10, 10, 3), np.uint8)])).all()


def test_network_embedding_from_a_saved_checkpoint(sqlite_store, tmp_path):
    fill_store(sqlite_store, n_videos=2, tracks_per_video=2, crops_per_track=3, seed=1,
               images_dir=IMAGES)
    torch.manual_seed(0)
    trunk = Trunk("resnet18")
    ckpt = tmp_path / "trunk.pt"
    save_backbone(ckpt, trunk, epoch=3)
    cfg = GraphConfig(embedding_model=str(ckpt), image_size=64, batch_size=5, device="auto")
    summary = embed(sqlite_store, cfg, progress=False)
    assert summary["embedded"] == 12 and summary["dim"] == 512 and summary["model"] == "resnet18@64px"
    emb = load_embeddings(sqlite_store)
    assert emb.checkpoint == str(ckpt.resolve()) and emb.vectors.shape == (12, 512)
    # the same crops through the trunk by hand give the same vectors
    from vidmine.graph.embed import NetworkEmbedder
    images = sqlite_store.load_crops(emb.crop_ids[:3].tolist())
    direct = NetworkEmbedder(str(ckpt), None, 64, "cpu")([images[int(i)] for i in emb.crop_ids[:3]])
    assert np.allclose(direct, emb.vectors[:3], atol=1e-4)
    # a second run has nothing new; provenance is recorded
    assert embed(sqlite_store, cfg, progress=False)["embedded"] == 0
    with sqlite_store.index.read() as conn:
        row = conn.execute(select(embedding_sets)).one()
        kind = conn.execute(select(runs.c.kind).where(runs.c.id == row.run_id)).scalar_one()
    assert (row.model, row.dim, row.count, kind) == ("resnet18@64px", 512, 12, "embed")
    assert (sqlite_store.root / row.path).is_file()


def test_network_embeds_at_the_size_it_was_trained_at(sqlite_store, tmp_path):
    fill_store(sqlite_store, n_videos=1, tracks_per_video=2, crops_per_track=2, seed=3,
               images_dir=IMAGES)
    ckpt = tmp_path / "trained.pt"
    save_backbone(ckpt, Trunk("resnet18"), config={"image_size": 48})
    summary = embed(sqlite_store, GraphConfig(embedding_model=str(ckpt)), progress=False)
    assert (summary["model"], summary["image_size"], summary["embedded"]) == \
        ("resnet18@48px", 48, 4)
    # another size is another model: its vectors never join the 48 px ones
    other = embed(sqlite_store, GraphConfig(embedding_model=str(ckpt), image_size=32),
                  progress=False)
    assert (other["model"], other["embedded"]) == ("resnet18@32px", 4)
    emb = load_embeddings(sqlite_store, checkpoint=str(ckpt.resolve()))
    assert emb.model == "resnet18@32px" and len(emb.set_ids) == 1
    plain = tmp_path / "plain.pt"  # no training record: the ImageNet size
    torch.save(Trunk("resnet18").net.state_dict(), plain)
    assert embed(sqlite_store, GraphConfig(embedding_model=str(plain), backbone="resnet18"),
                 progress=False)["image_size"] == 224


def test_plain_state_dict_needs_its_backbone_name(sqlite_store, tmp_path):
    fill_store(sqlite_store, n_videos=2, tracks_per_video=2, crops_per_track=2, seed=2,
               images_dir=IMAGES)
    plain = tmp_path / "plain.pt"
    torch.save(Trunk("resnet18").net.state_dict(), plain)
    with pytest.raises(UsageError, match="backbone"):
        embed(sqlite_store, GraphConfig(embedding_model=str(plain)), progress=False)
    summary = embed(sqlite_store, GraphConfig(embedding_model=str(plain), backbone="resnet18",
                                              image_size=32), progress=False)
    assert summary["embedded"] == 8
    with pytest.raises(UsageError, match="neither"):
        embed(sqlite_store, GraphConfig(embedding_model=str(tmp_path / "missing.pt")), progress=False)


def test_build_clusters_with_the_embedding_it_is_told_to(sqlite_store, tmp_path):
    # 'handcrafted' named on a store a network has embedded since: the descriptor's vectors,
    # not the newest (before, the name was taken for "not given" and the network's were used)
    fill_store(sqlite_store, n_videos=3, tracks_per_video=2, crops_per_track=3, seed=4,
               images_dir=IMAGES)
    ckpt = tmp_path / "trained.pt"
    save_backbone(ckpt, Trunk("resnet18"), config={"image_size": 32})
    handcrafted = embed(sqlite_store, GraphConfig(), progress=False)["embedding_set"]
    network = embed(sqlite_store, GraphConfig(embedding_model=str(ckpt)), progress=False)["embedding_set"]
    built = {name: build(sqlite_store, GraphConfig(embedding_model=model, val_fraction=0),
                         rebuild=True, progress=False)
             for name, model in (("named", "handcrafted"), ("newest", None),
                                 ("checkpoint", str(ckpt)))}
    assert (built["named"]["embedding_model"], built["named"]["embedding_sets"]) == \
        ("handcrafted", [handcrafted])
    assert built["newest"]["embedding_sets"] == built["checkpoint"]["embedding_sets"] == [network]
    assert built["newest"]["embedding_model"] == "resnet18@32px"
