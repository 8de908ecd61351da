"""Settings of a training job: the ``[training]`` table of the TOML file, overridable by flags."""
from __future__ import annotations

from dataclasses import dataclass, field

from vidmine.config import validate
from vidmine.errors import ConfigError
from vidmine.storage.schema import PAIR_KINDS

from .augment import SCALE
from .backbones import BACKBONES

OBJECTIVES = ("triplet", "moco")
# Positive sources: the first three are rows of the pairs table (made by vidmine-graph); the
# others are derived from the crops table at load time.
PAIR_SOURCES = PAIR_KINDS
DERIVED_SOURCES = ("tracker", "temporal", "none")
SOURCES = PAIR_SOURCES + DERIVED_SOURCES


@dataclass
class TrainConfig:
    objective: str = field(default="moco", metadata={"choices": OBJECTIVES,
        "help": "triplet (ranking loss) or moco (v2)"})
    positives: str = field(default="transitive:1", metadata={
        "help": "weighted mix of positive sources, e.g. 'transitive:1,intra:0.5'; sources: "
                + ", ".join(SOURCES)})
    backbone: str = field(default="resnet18", metadata={"choices": tuple(BACKBONES),
        "help": "resnet18, resnet50 or vgg16"})
    init: str | None = field(default=None, metadata={
        "help": "start the trunk from this checkpoint (a vidmine checkpoint or a torchvision "
                "state dict of --backbone) instead of random weights, e.g. the bootstrap "
                "round from the network of the first"})
    image_size: int = field(default=112, metadata={"min": 16, "help": "side of the square training images"})
    batch_size: int = field(default=64, metadata={"above": 0, "help": "pairs per step and process"})
    steps: int = field(default=2000, metadata={"above": 0, "help": "optimizer steps in all"})
    lr: float = field(default=0.03, metadata={"above": 0,
        "help": "peak SGD learning rate (for batch_size 256; "
                                                      "scaled linearly with the global batch)"})
    momentum: float = field(default=0.9, metadata={"below": 1, "help": "SGD momentum"})
    weight_decay: float = field(default=1e-4, metadata={"help": "SGD weight decay"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up before the cosine decay"})
    margin: float = field(default=0.5, metadata={"above": 0, "help": "triplet: margin of the ranking loss "
                                                         "(cosine distance; 0.5 as in 2015)"})
    negatives: int = field(default=4, metadata={"help": "triplet: negatives per pair, half the "
                                                        "hardest in the batch, half random"})
    embed_dim: int = field(default=1024, metadata={"above": 0, "help": "triplet: embedding size of the "
                                                           "linear layer on the trunk"})
    moco_dim: int = field(default=128, metadata={"above": 0, "help": "moco: output size of the MLP head"})
    moco_queue: int | None = field(default=None, metadata={"above": 0,
        "help": "moco: negatives in the queue (default auto: fitted to steps, batch and crops; "
                "65536 for long runs, as the paper)"})
    moco_momentum: float | None = field(default=None, metadata={"below": 1,
        "help": "moco: key encoder momentum (default auto: 1 - 10/steps within [0.9, 0.999]; "
                "0.999 for long runs, as the paper)"})
    bn_splits: int = field(default=0, metadata={
        "help": "moco in one process: batch-norm groups, so that keys and queries never share "
                "statistics (0: groups of 32, at least 2)"})
    queue_exclude: str = field(default="none", metadata={"choices": ("none", "track", "video", "cluster"),
        "help": "moco: leave out of a query's negatives the queued keys of its pair's own "
                "track or video, or (cluster) its tracks and graph clusters, as the triplet "
                "loss does (none: every key, as the paper)"})
    temperature: float = field(default=0.2, metadata={"above": 0, "help": "moco: InfoNCE temperature"})
    mlp: bool = field(default=True, metadata={"help": "moco: MLP projection head (v2)"})
    split: str = field(default="train", metadata={"choices": ("train", "val"),
        "help": "split of the pairs table to read"})
    pairs_run: int | None = field(default=None, metadata={
        "help": "read only the pairs of this graph run (default: every run, the current graph)"})
    min_gap: int = field(default=5, metadata={
        "help": "tracker/temporal: least distance in source frames between the two views"})
    max_gap: int = field(default=150, metadata={
        "help": "tracker/temporal: largest distance in source frames between the two views"})
    colour_augment: bool = field(default=True, metadata={
        "help": "MoCo v2's colour jitter and random grayscale (--no-colour-augment: crops, "
                "flips and blur only; an ablation)"})
    crop_scale: float = field(default=SCALE[0], metadata={"above": 0, "max": 1,
        "help": "smallest share of an image's area that a random resized crop keeps (MoCo "
                "v2: 0.2; larger keeps more of the object in both views, an ablation)"})
    gpu_augment: str = field(default="auto", metadata={"choices": ("auto", "on", "off"),
        "help": "decode JPEGs with nvjpeg and augment on the GPU: auto (when CUDA), on, off"})
    gpu_decode: str = field(default="nvjpeg", metadata={"choices": ("nvjpeg", "workers"),
        "help": "with the GPU recipe, where JPEGs are decoded: nvjpeg in the trainer, or the "
                "loader workers (their pixels go to the GPU in one copy a batch)"})
    cpu_augment: str = field(default="v2", metadata={"choices": ("v2", "batched"),
        "help": "CPU recipe in the loader workers: v2 (torchvision, per image: the reference) "
                "or batched (the GPU path's arithmetic on CPU tensors, faster)"})
    workers: int = field(default=4, metadata={"help": "DataLoader worker processes per trainer"})
    amp: bool = field(default=True, metadata={
        "help": "bf16 autocast where it is fast: on CUDA, and on CPUs with bf16 instructions "
                "(AVX-512 BF16, AMX); --no-amp trains in fp32 everywhere"})
    channels_last: bool = field(default=True, metadata={
        "help": "channels-last memory wherever bf16 autocast is on"})
    checkpoint_every: int = field(default=500, metadata={
        "help": "steps between checkpoints (0: only at the end)"})
    log_every: int = field(default=10, metadata={"above": 0, "help": "steps between CSV/TensorBoard rows"})
    seed: int = field(default=0, metadata={"help": "seed of sampling, augmentation and weights"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})

    def __post_init__(self):
        validate(self)
        if self.objective == "triplet" and self.negatives < 1:
            raise ConfigError("triplet training needs negatives >= 1")
        if not 0 <= self.min_gap <= self.max_gap:
            raise ConfigError(f"need 0 <= min_gap <= max_gap, got {self.min_gap}, {self.max_gap}")
        parse_positives(self.positives)


def parse_positives(spec: str) -> dict[str, float]:
    """'transitive:1,intra:0.5' -> {'transitive': 1.0, 'intra': 0.5}; a bare name weighs 1."""
    mix: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, weight = part.partition(":")
        name = name.strip()
        if name not in SOURCES:
            raise ConfigError(f"unknown positive source {name!r}; choose from {', '.join(SOURCES)}")
        try:
            mix[name] = float(weight) if weight else 1.0
        except ValueError:
            raise ConfigError(f"weight of {name!r} is not a number: {weight!r}") from None
        if not 0 <= mix[name] < float("inf"):
            raise ConfigError(f"weight of {name!r} must be a finite number >= 0, not {weight}")
    if not mix or sum(mix.values()) <= 0:
        raise ConfigError(f"no positive source with a weight above 0 in {spec!r}")
    return {k: v for k, v in mix.items() if v > 0}
