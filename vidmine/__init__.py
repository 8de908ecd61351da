"""vidmine: data-centric video mining for self-supervised visual representation learning.

One installed name. The subpackages live in the checkout's top-level folders, which
pyproject's ``package-dir`` maps into this namespace:

    vidmine.storage      storage/      SQL index + LMDB crop shards (imports no other subpackage)
    vidmine.mining       mining/       decode, discover, track, workers, daemon, Ray, synthetic video
    vidmine.graph        graph/        intra/inter edges, embeddings, clusters, transitive pairs
    vidmine.training     training/     pair datasets, augmentation, triplet and MoCo v2, trainer
    vidmine.evaluation   evaluation/   Top-K RIS, invariance sets, retrieval, probes, reports

This folder is the one home of what they all share. Below storage (importing nothing of
vidmine): ``errors``, ``config`` (dataclass settings from TOML and flags), ``images``
(codec, one resize, normalisation), ``arrays``, ``device``, ``progress``. Above storage:
``cli`` (the parser pattern, store flags, --json, one-line errors) and ``sheets``.
"""

__version__ = "0.1.0"
