"""The paper's bootstrap loop, small and on CPU, through the same commands a user types:
mine -> graph (hand-crafted) -> train on intra pairs -> embed with that network -> new
inter edges and transitive pairs -> train on transitive pairs -> evaluate."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from vidmine.descriptors import FLOORS
from vidmine.evaluation.cli import main as eval_main
from vidmine.graph.cli import main as graph_main
from vidmine.mining.cli import main as mine_main
from vidmine.storage.cli import main as store_main
from vidmine.storage.schema import embedding_sets
from vidmine.storage.store import StorageConfig, Store
from vidmine.training.backbones import load_backbone
from vidmine.training.cli import main as train_main

TINY = ["--image-size", "32", "--batch-size", "8", "--steps", "4", "--warmup-steps", "0",
        "--workers", "0", "--checkpoint-every", "100", "--backbone", "resnet18"]


def _json(capsys, code) -> dict:
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


@pytest.mark.slow
def test_bootstrap_loop_end_to_end(tmp_path, capsys):
    videos, work = tmp_path / "videos", tmp_path / "work"
    assert mine_main(["synth", str(videos), "--videos", "3", "--seed", "3"]) == 0
    capsys.readouterr()
    w = ["--workdir", str(work)]
    assert mine_main(["run", str(videos), *w, "--workers", "1", "--sheet", "none"]) == 0
    capsys.readouterr()
    status = _json(capsys, mine_main(["status", *w, "--json"]))
    assert status["videos"]["done"] == 3 and status["crops"] > 0

    _json(capsys, graph_main(["embed", *w, "--json"]))
    first = _json(capsys, graph_main(["build", *w, "--json"]))
    stats = _json(capsys, graph_main(["stats", *w, "--json"]))
    assert stats["pairs"]["intra"] > 0, first

    intra = tmp_path / "intra"
    _json(capsys, train_main(["train", *w, "--objective", "triplet", "--positives", "intra:1",
                              "--out", str(intra), "--json", *TINY]))
    assert load_backbone(intra / "final.pt").name == "resnet18"

    # Bootstrap: the network trained on tracking replaces the hand-crafted descriptor.
    model = ["--embedding-model", str(intra / "final.pt"), "--image-size", "32"]
    _json(capsys, graph_main(["embed", *w, *model, "--json"]))
    _json(capsys, graph_main(["build", *w, "--rebuild", *model, "--json"]))
    stats = _json(capsys, graph_main(["stats", *w, "--json"]))
    assert stats["pairs"]["transitive"] > 0 and stats["edges"]["inter"] > 0
    store = Store(StorageConfig(workdir=str(work)))
    with store.index.read() as conn:
        checkpoints = set(conn.execute(select(embedding_sets.c.checkpoint)).scalars())
    assert str(intra / "final.pt") in {str(c) for c in checkpoints}

    transitive = tmp_path / "transitive"
    _json(capsys, train_main(["train", *w, "--objective", "moco", "--positives",
                              "transitive:1,intra:0.5", "--moco-queue", "64",
                              "--out", str(transitive), "--json", *TINY]))

    ris = _json(capsys, eval_main(["ris", *w, "--size", "32", "--variants", "3", "--json",
                                   "--out", str(tmp_path / "report"),
                                   "--checkpoint", str(intra / "final.pt"),
                                   "--checkpoint", str(transitive / "final.pt")]))
    assert {r["model"] for r in ris["results"]} == {"intra/final", "transitive/final",
                                                    "untrained resnet18",
                                                    *(f"{f} (floor)" for f in FLOORS)}
    assert _json(capsys, store_main(["verify", *w, "--json"]))["ok"] is True
