"""One feature vector per crop: a trained backbone, or the hand-crafted descriptor
(``vidmine.descriptors.handcrafted_descriptor``), which lets the whole pipeline run before
any network is trained. Vectors are L2-normalised, so a dot product is a cosine similarity.

Every embedding run writes ``<workdir>/embeddings/<run>.npz`` (``crop_ids``, ``vectors``)
and an ``embedding_sets`` row (model, checkpoint, dim, count). Runs are incremental: a run
embeds only the crops that the latest sets of the same model and checkpoint lack, and
:func:`load_embeddings` joins those sets into one matrix.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

from vidmine.arrays import lookup_sorted
from vidmine.config import to_dict
from vidmine.descriptors import handcrafted_descriptor, l2_normalize
from vidmine.errors import UsageError
from vidmine.images import decode_image
from vidmine.progress import progress_bar
from vidmine.storage.errors import StorageError
from vidmine.storage.schema import crops, embedding_sets
from vidmine.storage.store import Store

from .config import GraphConfig

HANDCRAFTED = "handcrafted"


class NetworkEmbedder:
    """L2-normalised pooled features of a trunk loaded from a checkpoint (a dot product is
    then a cosine similarity, as for the hand-crafted descriptor)."""

    def __init__(self, checkpoint: str, backbone: str | None, image_size: int | None,
                 device: str):
        from vidmine.training.backbones import load_backbone
        try:
            self.trunk = load_backbone(checkpoint, backbone)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        # A network sees crops best at the size it was trained at (a 32 px network fed 224 px
        # crops meets objects 7x larger than any it learned, and costs 49x the compute).
        self.image_size = image_size or self.trunk.trained_image_size or 224
        self.device = device
        # The size is part of the model: sets at two sizes never join (load_embeddings).
        self.name = f"{self.trunk.name}@{self.image_size}px"

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        from vidmine.training.features import embed_images
        return l2_normalize(embed_images(self.trunk, images, self.image_size, len(images),
                                         self.device))


def checkpoint_of(cfg: GraphConfig) -> str | None:
    """The checkpoint path ``cfg.embedding_model`` names, resolved; None for the descriptor."""
    if cfg.embedding_model in (None, HANDCRAFTED):
        return None
    return str(Path(cfg.embedding_model).expanduser().resolve())


def make_embedder(cfg: GraphConfig):
    """(function images -> vectors, model name, checkpoint path or None, input size or None)."""
    checkpoint = checkpoint_of(cfg)
    if checkpoint is None:
        return handcrafted_descriptor, HANDCRAFTED, None, None
    path = Path(checkpoint)
    if not path.is_file():
        raise UsageError(f"embedding model is neither 'handcrafted' nor a checkpoint file: "
                         f"{cfg.embedding_model}")
    net = NetworkEmbedder(str(path), cfg.backbone, cfg.image_size, cfg.device)
    return net, net.name, str(path), net.image_size


@dataclass
class Embeddings:
    crop_ids: np.ndarray      # sorted
    vectors: np.ndarray       # (n, dim) float32, rows L2-normalised
    model: str
    checkpoint: str | None
    set_ids: list[int]

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row of each crop id; -1 where the crop has no vector."""
        return lookup_sorted(self.crop_ids, ids)


def load_embeddings(store: Store, model: str | None = None,
                    checkpoint: str | None = None) -> Embeddings | None:
    """The joined embedding sets of one model + checkpoint (default: those of the newest
    set; ``model`` None with a ``checkpoint``: that checkpoint's); None when there is no
    such set. A crop embedded twice keeps its newest vector."""
    with store.index.read() as conn:
        sets = conn.execute(select(embedding_sets).order_by(embedding_sets.c.id)).mappings().all()
    if model is not None:
        sets = [s for s in sets if s["model"] == model and s["checkpoint"] == checkpoint]
    elif checkpoint is not None:
        sets = [s for s in sets if s["checkpoint"] == checkpoint]
    if not sets:
        return None
    newest = sets[-1]
    chain = [s for s in sets if s["model"] == newest["model"]
             and s["checkpoint"] == newest["checkpoint"] and s["dim"] == newest["dim"]]
    ids, vecs = [], []
    for s in reversed(chain):  # newest first, so np.unique keeps the newest vector
        path = store.root / s["path"]
        if not path.is_file():
            raise UsageError(f"embedding file of set {s['id']} is missing: {path}")
        with np.load(path) as data:
            ids.append(data["crop_ids"])
            vecs.append(data["vectors"])
    all_ids = np.concatenate(ids)
    crop_ids, first = np.unique(all_ids, return_index=True)
    return Embeddings(crop_ids, np.concatenate(vecs)[first].astype(np.float32),
                      newest["model"], newest["checkpoint"], [s["id"] for s in chain])


def _decode(blob: bytes, crop_id: int) -> np.ndarray:
    # Every node needs a vector (a graph cannot cluster around a hole): an undecodable crop
    # stops the embedding with one line naming it, for verify --repair to deal with.
    try:
        return decode_image(blob)
    except ValueError:
        raise StorageError(f"crop {crop_id} is not a decodable image; run "
                           "`vidmine-store verify --repair`, then embed again") from None


def embed(store: Store, cfg: GraphConfig, everything: bool = False,
          progress: bool = True) -> dict:
    """Embed the object crops that have no vector yet for this model (all with
    ``everything``); one run row, one .npz, one embedding_sets row."""
    with store.index.read() as conn:
        rows = store.index.read_columns(conn, select(crops.c.id, crops.c.shard, crops.c.key)
                                        .where(crops.c.kind == "object").order_by(crops.c.id),
                                        dtypes={"id": np.int64, "shard": object, "key": object})
    if len(rows["id"]) == 0:
        raise UsageError("the index has no object crops yet (mine some videos first)")
    embedder, model, checkpoint, image_size = make_embedder(cfg)
    todo = np.ones(len(rows["id"]), bool)
    if not everything:
        known = load_embeddings(store, model, checkpoint)
        if known is not None:
            todo = known.rows_of(rows["id"]) < 0
    ids = rows["id"][todo]
    refs = list(zip(rows["shard"][todo], rows["key"][todo]))
    config = to_dict(cfg) | {"model": model, "checkpoint": checkpoint, "image_size": image_size,
                             "everything": everything}
    with store.index.run("embed", config) as run:
        t0 = time.perf_counter()
        chunks = []
        starts = range(0, len(ids), cfg.batch_size)
        for start in progress_bar(starts, desc="embed", unit="batch",
                                  disable=not progress or len(ids) == 0):
            blobs = store.reader.get_many(refs[start:start + cfg.batch_size])
            chunks.append(embedder([_decode(b, crop_id) for b, crop_id in
                                    zip(blobs, ids[start:start + cfg.batch_size])]))
        seconds = time.perf_counter() - t0
        summary = {"run_id": run.id, "model": model, "checkpoint": checkpoint,
                   **({"image_size": image_size} if image_size else {}),
                   "embedded": len(ids), "already_embedded": int((~todo).sum()),
                   "seconds": round(seconds, 3),
                   "crops_per_s": round(len(ids) / seconds, 1) if seconds > 0 and len(ids) else None}
        if len(ids):
            vectors = np.concatenate(chunks).astype(np.float32)
            rel = Path("embeddings") / f"{run.id}.npz"
            path = store.subdir("embeddings") / f"{run.id}.npz"
            tmp = path.with_name(f".{path.name}.tmp.npz")
            np.savez(tmp, crop_ids=ids, vectors=vectors)
            tmp.replace(path)
            with store.index.write() as conn:
                set_id = conn.execute(embedding_sets.insert().returning(embedding_sets.c.id), dict(
                    run_id=run.id, model=model, checkpoint=checkpoint, dim=int(vectors.shape[1]),
                    count=len(ids), path=str(rel), created_at=time.time())).scalar_one()
            summary |= {"embedding_set": set_id, "dim": int(vectors.shape[1]), "path": str(path)}
        run.summary = summary
    return summary
