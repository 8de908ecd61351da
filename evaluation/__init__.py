"""Evaluation: what a trained network learned.

It owns the Top-K Representation Invariance Score (RIS) and its invariance sets (generic
folder layout, ALOI/GOT-10k/Pascal3D+ converters, sets built from held-out tracks and
labelled synthetic transforms), instance retrieval on held-out tracks, linear and kNN
probes, and the reports (terminal table, JSON, bar charts) that compare checkpoints.
"""
