"""vidmine: data-centric video mining for self-supervised visual representation learning.

One installed name. The subpackages live in the checkout's top-level folders, which
pyproject's ``package-dir`` maps into this namespace:

    vidmine.storage      storage/      SQL index + LMDB crop shards (imports no other subpackage)
    vidmine.mining       mining/       decode, discover, track, workers, daemon, Ray, synthetic video
    vidmine.graph        graph/        intra/inter edges, embeddings, clusters, transitive pairs
    vidmine.training     training/     pair datasets, augmentation, triplet and MoCo v2, trainer
    vidmine.evaluation   evaluation/   Top-K RIS, invariance sets, retrieval, probes, reports
"""

__version__ = "0.1.0"
