"""Settings of the graph package: the ``[graph]`` table of the TOML file, or ``--flags``."""
from __future__ import annotations

from dataclasses import dataclass, field

from vidmine.config import validate

INTRA_MODES = ("first_last", "stride")
CLUSTERINGS = ("kmeans", "two_level", "mutual_knn")


@dataclass
class GraphConfig:
    # intra-instance edges
    intra_mode: str = field(default="first_last", metadata={"choices": INTRA_MODES,
        "help": "which crops of a track to join: first_last (the first and last crop, as in "
                "Wang & Gupta 2015) or stride (crop i with crop i+stride, every crop a node)"})
    intra_stride: int = field(default=1, metadata={"above": 0,
        "help": "with intra_mode=stride: join crops this many positions apart in the track"})
    # embeddings
    embedding_model: str | None = field(default=None, metadata={
        "help": "'handcrafted' (colour + gradient histograms) or a checkpoint path "
                "(a vidmine checkpoint or a torchvision state dict); default: embed with "
                "the hand-crafted descriptor, build with the newest embeddings"})
    backbone: str | None = field(default=None, metadata={
        "help": "torchvision name of a plain state dict checkpoint (resnet18, resnet50, vgg16)"})
    image_size: int | None = field(default=None, metadata={"min": 16,
        "help": "network input size in pixels (default auto: the size the checkpoint was "
                "trained at, 224 for a plain state dict)"})
    batch_size: int = field(default=128, metadata={"above": 0, "help": "crops per embedding batch"})
    device: str = field(default="auto", metadata={"help": "auto (cuda when present), cpu, cuda"})
    # clustering
    clustering: str = field(default="kmeans", metadata={"choices": CLUSTERINGS,
        "help": "kmeans, two_level (coarse then fine k-means, for millions of nodes), or "
                "mutual_knn (mutual nearest neighbours above a similarity threshold)"})
    k: int = field(default=0, metadata={
        "help": "k-means clusters (0: nodes / cluster_size)"})
    coarse_k: int = field(default=0, metadata={
        "help": "two_level: coarse clusters (0: sqrt(nodes))"})
    fine_k: int = field(default=0, metadata={
        "help": "two_level: fine clusters per coarse cluster (0: members / cluster_size)"})
    cluster_size: int = field(default=8, metadata={"above": 0,
        "help": "target members of a fine cluster when k or fine_k is 0"})
    kmeans_iters: int = field(default=20, metadata={"above": 0, "help": "k-means iterations"})
    knn_k: int = field(default=10, metadata={"above": 0, "help": "mutual_knn: neighbours per node"})
    knn_threshold: float = field(default=0.8, metadata={"min": -1, "max": 1,
        "help": "mutual_knn: least cosine similarity of an edge"})
    # inter-instance edges and pairs
    inter_different_videos: bool = field(default=True, metadata={
        "help": "inter edges only between crops of different videos (one object may be "
                "tracked twice in one video)"})
    max_inter_per_node: int = field(default=4, metadata={"help": "most inter edges at a node"})
    max_pairs_per_cluster: int = field(default=2000, metadata={
        "help": "most inter + transitive pairs from one fine cluster (0: no cap)"})
    val_fraction: float = field(default=0.1, metadata={"below": 1,
        "help": "fraction of videos whose pairs form the val split"})
    seed: int = field(default=0, metadata={"help": "seed of clustering, orders and the split"})

    def __post_init__(self):
        validate(self)
