"""Training: pair-sampled self-supervised training jobs.

It owns pair datasets (indices read from SQL once, crops from LMDB), samplers with in-batch
negatives, augmentation (CPU and nvjpeg/GPU paths), backbones and checkpoints, the pooled
features of a trunk that graph and evaluation embed with, the triplet ranking and MoCo v2
objectives, and the trainer (mixed precision, resume, torchrun/DDP).
"""
