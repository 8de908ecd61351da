"""Invariance sets rendered from held-out solids, the floors that learn nothing, and
retrieval of object identity across renders."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vidmine.descriptors import FLOORS, colour_histogram, raw_pixels
from vidmine.errors import UsageError
from vidmine.evaluation.cli import EvalConfig, input_size
from vidmine.evaluation.cli import main as eval_main
from vidmine.evaluation.retrieval import retrieval_metrics
from vidmine.evaluation.sets import rendered, rendered_retrieval
from vidmine.mining.cli import main as mine_main
from vidmine.mining.render import CATEGORIES
from vidmine.training.backbones import (
    Trunk,
    read_checkpoint,
    save_backbone,
    trained_image_size,
)


@pytest.fixture(scope="module")
def sets_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("rendered")
    assert mine_main(["synth-sets", str(out), "--objects-per-category", "2", "--json"]) == 0
    return out


def test_sets_have_the_layout_their_manifest_says(sets_dir):
    manifest = json.loads((sets_dir / "manifest.json").read_text())
    objects = manifest["objects"]
    assert len(objects) == 2 * len(CATEGORIES)
    assert all(o["instance"] >= 1_000_000 for o in objects)   # held-out pool only
    kinds = manifest["kinds"]
    assert kinds["viewpoint"] == {"path": "viewpoint", "images": 12 * 24, "sets": 12, "classes": 12}
    assert kinds["instance"]["classes"] == len(CATEGORIES) and kinds["instance"]["sets"] == 24
    by_name = {inv.name: inv for inv in rendered(sets_dir)}
    assert set(by_name) == {f"{k} (rendered)" for k in ("viewpoint", "illumination", "occlusion",
                                                         "instance")}
    vp = by_name["viewpoint (rendered)"]
    assert len(vp.images) == 288 and len(np.unique(vp.set_ids)) == 12
    # instance sets: the members of a set are different objects of one category
    inst = by_name["instance (rendered)"]
    assert len(np.unique(inst.class_ids)) == 6 and np.bincount(inst.set_ids).min() == 2
    paths, labels, groups = rendered_retrieval(sets_dir)
    assert len(paths) == 12 * 3 * 6 and len(np.unique(groups)) == 36
    assert all(len(np.unique(groups[labels == obj])) == 3 for obj in np.unique(labels))


def test_viewpoint_images_of_one_object_differ_by_more_than_its_renders_repeat(sets_dir):
    """The turntable really turns: views of one object differ (not one image 24 times)."""
    from vidmine.images import load_rgb
    vp = next(inv for inv in rendered(sets_dir) if inv.name.startswith("viewpoint"))
    first = [load_rgb(p) for p, s in zip(vp.images, vp.set_ids) if s == 0][:8]
    hists = colour_histogram(first)
    assert np.abs(hists[0] - hists[4]).sum() > 0.2


def test_floors_are_descriptors_of_fixed_size():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), np.uint8) for h, w in ((30, 40), (64, 64))]
    assert colour_histogram(images).shape == (2, 512)
    assert np.allclose(colour_histogram(images).sum(1), 1)
    assert raw_pixels(images).shape == (2, 192)
    assert set(FLOORS) == {"colour-histogram", "raw-pixels", "handcrafted"}
    assert FLOORS["handcrafted"](images).shape == (2, 336)


def test_retrieval_leaves_the_querys_own_group_out():
    # objects 0 and 1, two renders each; within a render the views are identical
    feats = np.array([[1, 0], [1, 0], [0.9, 0.1], [0, 1], [0, 1], [0.1, 0.9]], float)
    labels = np.array([0, 0, 0, 1, 1, 1])
    groups = np.array([0, 0, 1, 2, 2, 3])
    with_groups = retrieval_metrics(feats, labels, groups=groups)
    assert with_groups["recall@1"] == 1.0 and with_groups["queries"] == 6
    # a near copy of a query in its own render never counts: scramble the other render
    scrambled = feats.copy()
    scrambled[[2, 5]] = scrambled[[5, 2]]
    assert retrieval_metrics(scrambled, labels, groups=groups)["recall@1"] == 0.0
    assert retrieval_metrics(scrambled, labels)["recall@1"] > 0.5   # without groups it would


def test_input_size_is_the_one_the_checkpoints_were_trained_at(tmp_path):
    def checkpoint(name, size):
        path = tmp_path / f"{name}.pt"
        if size is None:  # a plain torchvision state dict says nothing of its training
            torch.save(Trunk("resnet18").net.state_dict(), path)
        else:
            save_backbone(path, Trunk("resnet18"), config={"image_size": size})
        return trained_image_size(read_checkpoint(path))
    at32, at48, plain = checkpoint("a", 32), checkpoint("b", 48), checkpoint("c", None)
    assert input_size(EvalConfig(), [at32]) == 32
    assert input_size(EvalConfig(), [at32, plain]) == 32
    assert input_size(EvalConfig(), [plain]) == input_size(EvalConfig(), []) == 112
    assert input_size(EvalConfig(size=64), [at32, at48]) == 64
    with pytest.raises(UsageError, match=r"trained at \[32, 48\] px.*--size"):
        input_size(EvalConfig(), [at32, at48])


@pytest.mark.slow
def test_eval_reports_floors_beside_the_networks(sets_dir, tmp_path, capsys):
    trained_at_32 = tmp_path / "net.pt"
    save_backbone(trained_at_32, Trunk("resnet18"), config={"image_size": 32})
    args = ["--batch-size", "64", "--workdir", str(tmp_path / "w"), "--json"]
    assert eval_main(["ris", "--sets", f"rendered:{sets_dir}", "--out", str(tmp_path / "r"),
                      "--checkpoint", str(trained_at_32), *args]) == 0
    ris = json.loads(capsys.readouterr().out)
    assert ris["config"]["size"] == 32   # the size its one checkpoint was trained at
    models = {r["model"] for r in ris["results"]}
    assert models == {"net", "untrained resnet18", "colour-histogram (floor)",
                      "raw-pixels (floor)", "handcrafted (floor)"}
    assert all(0 <= r["top10"] <= 100 for r in ris["results"])
    # every row but the untrained network's carries its difference to it, with an interval
    for inv in {r["invariance"] for r in ris["results"]}:
        rows = {r["model"]: r for r in ris["results"] if r["invariance"] == inv}
        untrained = rows.pop("untrained resnet18")
        assert "top10_vs_untrained" not in untrained
        for r in rows.values():
            d, lo, hi = r["top10_vs_untrained"]
            assert d == pytest.approx(r["top10"] - untrained["top10"], abs=1e-4)
            assert lo <= d + 1e-9 and d <= hi + 1e-9
    assert eval_main(["retrieval", "--data", str(sets_dir), "--out", str(tmp_path / "q"),
                      "--size", "32", *args]) == 0
    ret = json.loads(capsys.readouterr().out)
    assert ret["objects"] == 12 and len(ret["results"]) == 4
    colour = next(r for r in ret["results"] if r["model"].startswith("colour"))
    assert colour["mAP"] < 0.5   # colour alone does not find an object across renders
    untrained = next(r for r in ret["results"] if r["model"] == "untrained resnet18")
    d, lo, hi = colour["mAP_vs_untrained"]
    assert d == pytest.approx(colour["mAP"] - untrained["mAP"], abs=1e-5) and lo <= d <= hi
