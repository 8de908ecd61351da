"""Graph: the invariance graph over stored crops.

It owns intra-instance edges (crops of one track), crop embeddings (a trained backbone or a
hand-crafted descriptor), clustering into inter-instance edges, transitive positive pairs
with their provenance, and the inspection CLI (stats, show, explain, sheets, HTML export).
Bulk work is vectorized over arrays; networkx serves per-neighbourhood inspection.
"""
