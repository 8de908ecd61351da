"""experiments/study.py end to end at the smallest scale, with the CLIs called in-process:
every arm trains, every network is evaluated, the table is written, and a second run of the
same command reuses every stage instead of redoing it; experiments/curve.py reads the runs
back."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

STUDY = Path(__file__).resolve().parents[1] / "experiments" / "study.py"
CURVE = STUDY.with_name("curve.py")


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_merge_reads_a_setting_added_later_as_older_folders_were_made():
    merge = _load(STUDY.with_name("merge_studies.py"))
    before = {"settings": {"scale": "cpu", "steps": 1000}}   # a folder made before the option
    after = {"settings": {"scale": "cpu", "steps": 1000, "category_look": False}}
    assert merge.settings_of(before) == merge.settings_of(after)
    other = {"settings": {"scale": "cpu", "steps": 1000, "category_look": True}}
    assert merge.study.settings_changes(merge.settings_of(before), merge.settings_of(other)) == [
        "category_look False -> True"]


@pytest.mark.slow
def test_study_in_parts_without_bootstrap_merged(tmp_path):
    study, merge = _load(STUDY), _load(STUDY.with_name("merge_studies.py"))
    assert [study.reads_graph(a) for a in study.ARMS] == [False, False, True, True]
    # Plain and tracker pairs come from the crops alone: no bootstrap network is trained.
    argv = ["--scale", "toy", "--synth-train", "2", "--objects-per-category", "3", "--steps", "2",
            "--in-process", "--arms", "moco-none", "moco-tracker"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert study.main([*argv, "--seeds", "0", "--out", str(a)]) == 0
    stages = json.loads((a / "results.json").read_text())["stages"]
    assert "train-bootstrap" not in stages and "graph-bootstrap" not in stages
    assert not (a / "runs" / "bootstrap-intra").exists()
    assert stages["train-moco-tracker-s0"]["pairs"]["tracker"] > 0
    assert "no bootstrap needed): " in (a / "results.md").read_text()

    # Another seed in other folders (other sessions), one arm each: the same data, one table.
    b, c = tmp_path / "b", tmp_path / "c"
    assert study.main([*argv[:-2], "moco-none", "--seeds", "1", "--out", str(b)]) == 0
    assert study.main([*argv[:-2], "moco-tracker", "--seeds", "1", "--out", str(c)]) == 0
    results = json.loads((b / "results.json").read_text())
    for row in results["ris"] + results["retrieval"]:   # as made before rows named their seed
        row.pop("seed", None)
    (b / "results.json").write_text(json.dumps(results))
    assert merge.main([str(a), str(b), str(c), "--out", str(tmp_path / "abc")]) == 0
    merged = json.loads((tmp_path / "abc" / "results.json").read_text())
    parts = {d: json.loads((d / "results.json").read_text())["summary"] for d in (a, b, c)}
    col = "viewpoint (rendered) top10"
    for arm, (first, second) in {"moco-none": (a, b), "moco-tracker": (a, c),
                                 "untrained resnet18": (a, b)}.items():
        assert merged["summary"][arm][col]["values"] == [
            parts[first][arm][col]["values"][0], parts[second][arm][col]["values"][0]]
    # Both parts of seed 1 evaluated its untrained network: kept once, since it scored the same.
    assert parts[c]["untrained resnet18"][col] == parts[b]["untrained resnet18"][col]
    assert merged["summary"]["colour-histogram (floor)"][col]["values"] == \
        parts[a]["colour-histogram (floor)"][col]["values"]
    assert merged["seeds"] == [0, 1] and len(merged["parts"]) == 3
    table = (tmp_path / "abc" / "results.md").read_text()
    assert "- part: `python experiments/study.py" in table and "above every floor" in table
    assert merge.main([str(a), str(c), "--out", str(tmp_path / "ac")]) == 0
    table = (tmp_path / "ac" / "results.md").read_text()   # plain MoCo has seed 0 alone there
    assert "| moco-none (seed 0) |" in table and "| moco-tracker |" in table
    kept = tmp_path / "results-seed1-tracker.json"   # an earlier table kept under another name
    kept.write_text((c / "results.json").read_text())
    assert merge.main([str(a), str(b), str(kept), "--out", str(tmp_path / "abk")]) == 0
    assert json.loads((tmp_path / "abk" / "results.json").read_text())["summary"] == merged["summary"]
    assert "| hand-crafted descriptor |" in table and "(part " not in table   # one graph
    # A part whose graph scored otherwise (e.g. a bootstrap in bf16) shows its own row.
    results = json.loads(kept.read_text())
    results["stages"]["graph-handcrafted"]["pair_quality"]["intra_pairs_one_instance"]["right"] -= 0.5
    kept.write_text(json.dumps(results))
    assert merge.main([str(a), str(b), str(kept), "--out", str(tmp_path / "abk")]) == 0
    table = (tmp_path / "abk" / "results.md").read_text()
    assert table.count("| hand-crafted descriptor") == 2
    assert "| hand-crafted descriptor (part 3) |" in table
    with pytest.raises(SystemExit, match="results-gone.json does not exist"):
        merge.main([str(a), str(tmp_path / "results-gone.json"), "--out", str(tmp_path / "ag")])

    with pytest.raises(SystemExit, match="moco-tracker of seed 1 is in both"):
        merge.main([str(a), str(c), str(c), "--out", str(tmp_path / "acc")])
    results = json.loads((c / "results.json").read_text())
    untrained = next(r for r in results["ris"] if r["model"] == "untrained resnet18")
    untrained["top10"] += 1.0
    (c / "results.json").write_text(json.dumps(results))
    with pytest.raises(SystemExit, match="untrained resnet18 network of seed 1 scored otherwise"):
        merge.main([str(a), str(b), str(c), "--out", str(tmp_path / "abc")])
    with pytest.raises(SystemExit, match="seed 0 is in both"):
        merge.main([str(a), str(a), "--out", str(tmp_path / "aa")])
    # Data a little apart (another machine's rendering) merge only when asked, and only near.
    results = json.loads((b / "results.json").read_text())
    floor = next(r for r in results["ris"] if r["model"] == "colour-histogram (floor)")
    floor["top10"] += 0.3
    (b / "results.json").write_text(json.dumps(results))
    with pytest.raises(SystemExit, match=r"other data .*floors moved by up to 0.30; rendered on "
                                         r".*PyAV .*--other-data merges"):
        merge.main([str(a), str(b), "--out", str(tmp_path / "ab")])
    assert merge.main([str(a), str(b), "--other-data", "--out", str(tmp_path / "ab")]) == 0
    assert "crops, rendered on " in (tmp_path / "ab" / "results.md").read_text()
    results["stages"]["mine-train"]["crops"] = int(results["stages"]["mine-train"]["crops"] * 1.02) + 1
    (b / "results.json").write_text(json.dumps(results))
    with pytest.raises(SystemExit, match="other data .*crops"):
        merge.main([str(a), str(b), "--other-data", "--out", str(tmp_path / "ab")])
    results["settings"]["steps"] = 3
    (b / "results.json").write_text(json.dumps(results))
    with pytest.raises(SystemExit, match="other settings .*steps 2 -> 3"):
        merge.main([str(a), str(b), "--out", str(tmp_path / "ab")])


@pytest.mark.slow
def test_study_smoke(tmp_path, capsys):
    study = _load(STUDY)
    out = tmp_path / "study"
    argv = ["--scale", "toy", "--seeds", "0", "--out", str(out), "--synth-train", "4",
            "--objects-per-category", "3", "--steps", "2", "--bootstrap-steps", "2",
            "--in-process"]
    assert study.main(argv) == 0
    # before each arm's training: what the rest will take at the bootstrap's speed
    assert "study: 4 trainings left, about " in capsys.readouterr().err
    result = json.loads((out / "results.json").read_text())

    stages = result["stages"]
    assert stages["mine-train"]["crops"] > 0
    assert stages["graph-bootstrap"]["pairs"]["transitive"] > 0
    quality = stages["graph-handcrafted"]["pair_quality"]
    assert quality["videos_with_truth"] == 4 and quality["intra_pairs_one_instance"]["scored"] > 0
    turn = quality["intra_pairs_turn_deg"]
    assert turn["scored"] > 0 and 0 <= turn["median"] <= turn["p90"] <= 180
    rows = set(study.ARMS) | set(study.FLOOR_NAMES)
    assert {study.arm_of(r["model"]) for r in result["ris"]} == rows
    assert {study.arm_of(r["model"]) for r in result["retrieval"]} == rows
    assert {r["invariance"] for r in result["ris"]} == {
        f"{k} (rendered)" for k in ("viewpoint", "illumination", "occlusion", "instance")}
    table = (out / "results.md").read_text()
    assert "Smoke check" in table and "| moco-tracker | " in table and "| handcrafted (floor) |" in table
    assert "  - Top-10: moco-none above every floor by more than 2 sd: " in table
    assert "  - Top-25: moco-none above every floor by more than 2 sd: " in table
    assert (out / "ris_top10.png").is_file()
    assert all(0.0 <= r["mAP"] <= 1.0 for r in result["retrieval"])

    # The same command again: nothing is retrained (checkpoints untouched), same table.
    final = out / "runs" / "moco-none-s0" / "final.pt"
    stamp = final.stat().st_mtime_ns
    assert study.main(argv) == 0
    assert final.stat().st_mtime_ns == stamp
    assert json.loads((out / "results.json").read_text())["summary"] == result["summary"]

    # A deadline already passed stops before the first stage that is not done yet.
    assert study.main([*argv, "--seeds", "0", "1", "--deadline-min", "0"]) == 3
    assert not (out / "runs" / "moco-none-s1").exists()
    assert "deadline" in capsys.readouterr().err

    # A table written afresh from stages all done (results.md removed, nothing to run) holds
    # every seed asked for, not only the first.
    two_seeds = [*argv, "--seeds", "0", "1", "--arms", "moco-none"]
    assert study.main(two_seeds) == 0
    (out / "results.md").unlink()
    assert study.main(two_seeds) == 0
    rows = json.loads((out / "results.json").read_text())["ris"]
    assert {r["model"] for r in rows if r["model"].startswith("moco-none")} == {
        "moco-none-s0/final", "moco-none-s1/final"}

    # Other settings in the same folder are refused: its stages were made with the old ones.
    with pytest.raises(SystemExit, match="steps 2 -> 3"):
        study.main([*argv, "--steps", "3"])
    with pytest.raises(SystemExit, match="category_look False -> True"):
        study.main([*argv, "--category-look"])   # other data: every stage would differ

    # An ablation arm, named in --arms, trains with its own flags on the same data and graph.
    arm = "triplet-intra-transitive-nocolour"
    assert study.main([*argv, "--arms", arm]) == 0
    saved = torch.load(out / "runs" / f"{arm}-s0" / "final.pt", map_location="cpu",
                       weights_only=False)
    assert saved["config"]["colour_augment"] is False
    assert saved["config"]["positives"] == "intra:1,transitive:1"
    assert {study.arm_of(r["model"]) for r in json.loads(
        (out / "results.json").read_text())["ris"]} == {arm, *study.FLOOR_NAMES}
    # An arm's flags override the preset's, its learning rate included.
    arm = "moco-none-nocolour-temp05-lr"
    assert study.main([*argv, "--arms", arm]) == 0
    saved = torch.load(out / "runs" / f"{arm}-s0" / "final.pt", map_location="cpu",
                       weights_only=False)
    assert (saved["config"]["temperature"], saved["config"]["lr"]) == (0.5, 0.75)

    # experiments/curve.py reads the runs back: one point per run, floors beside, a chart.
    curve = _load(CURVE)
    metric = "viewpoint (rendered) top10"
    points, floors = curve.load_points([out, out], arm, metric)
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert [p["steps"] for p in points] == [2, 2]
    assert points[0]["values"] == summary[arm][metric]["values"]
    assert set(floors) == {m for m in summary if m != arm}
    assert [p["videos"] for p in points] == [4, 4]
    row = f"| | 4 | 2 | {points[0]['values'][0]:.1f} |"
    assert row in curve.table(points, floors, arm, metric)
    curve.plot(points, floors, arm, metric, tmp_path / "curve.png", x="videos")
    assert (tmp_path / "curve.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="no 'viewpoint"):
        curve.load_points([out], "no-such-arm", metric)

    # experiments/pair_views.py: how far each positive source's two views turn.
    views = _load(STUDY.with_name("pair_views.py"))
    assert views.main([str(out), "--out", str(tmp_path / "views"),
                       "--chart", str(tmp_path / "views.png")]) == 0
    written = json.loads((tmp_path / "views" / "results.json").read_text())
    sources, span = written["studies"][out.name], written["track_spans"][out.name]
    assert span["tracks"] == stages["mine-train"]["tracks"] and 0 <= span["median"] <= span["p90"]
    tracker = [sources[f"tracker, {g}-150 frames apart"] for g in views.MIN_GAPS]
    assert tracker[0]["summary"]["scored"] > 0 and tracker[0]["one_instance"] >= 0.9
    assert [r["pairs"] for r in tracker] == sorted((r["pairs"] for r in tracker), reverse=True)
    assert all(0 <= r["summary"]["p25"] <= r["summary"]["p90"] <= 180
               for r in tracker if r["summary"]["scored"])
    assert "| intra |" in (tmp_path / "views" / "results.md").read_text()
    assert (tmp_path / "views.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        views.main([str(tmp_path / "nowhere")])

    # experiments/ris_by_k.py reads vidmine-eval's reports: an arm over its seeds, the floors
    # from the first report only, and a report with other Ks refused.
    by_k = _load(STUDY.with_name("ris_by_k.py"))
    floors_report, arm_report = out / "eval" / "floors-ris" / "report.json", \
        out / "eval" / "ris-s0" / "report.json"
    ks, models = by_k.load([str(floors_report), f"toy={arm_report}"], "viewpoint")
    assert ks == [10, 25]
    assert models[f"{arm} (toy)"][10] == summary[arm][metric]["values"]
    assert models["colour-histogram (floor)"][25] == \
        summary["colour-histogram (floor)"]["viewpoint (rendered) top25"]["values"]
    assert f"| {arm} (toy) | " in by_k.table(ks, models, "viewpoint")
    by_k.plot(ks, models, "viewpoint", tmp_path / "by_k.png")
    assert (tmp_path / "by_k.png").stat().st_size > 0
    report = json.loads(arm_report.read_text())
    for r in report["results"]:
        del r["top25"]
    (tmp_path / "k10.json").write_text(json.dumps(report))
    with pytest.raises(SystemExit, match="differs"):
        by_k.load([str(floors_report), str(tmp_path / "k10.json")], "viewpoint")

    # An arm that starts from another arm's network needs that network first, then takes it.
    second, start = "moco-transitive-nocolour-fromnone", "moco-none-nocolour"
    with pytest.raises(SystemExit, match=f"starts from the network of {start}"):
        study.main([*argv, "--arms", second])
    assert study.main([*argv, "--arms", start, second]) == 0
    saved = torch.load(out / "runs" / f"{second}-s0" / "final.pt", map_location="cpu",
                       weights_only=False)
    assert saved["config"]["init"] == str(out.resolve() / "runs" / f"{start}-s0" / "final.pt")
    assert saved["config"]["positives"] == "transitive:1"

    # The ground-truth ablations rewrite transitive positives: another instance of the anchor's
    # category, another crop of its own instance, or another instance of any category.
    from sqlalchemy import select

    from vidmine.arrays import lookup_sorted
    from vidmine.graph.quality import crop_labels
    from vidmine.storage.schema import pairs
    from vidmine.storage.store import StorageConfig, Store

    def transitive_labels():
        with Store(StorageConfig(workdir=str(out / "work")), create=False) as store:
            truth = crop_labels(store)
            ids, instance, category = truth.ids, truth.instance, truth.category
            with store.index.read() as conn:
                rows = conn.execute(select(pairs.c.anchor, pairs.c.positive).where(
                    pairs.c.kind == "transitive")).all()
        a, p = (lookup_sorted(ids, np.array(c, np.int64)) for c in zip(*rows))
        assert (a >= 0).all() and (p >= 0).all()   # every pair joins two object crops
        return ids, instance, category, a, p

    likeness = _load(STUDY.with_name("pair_likeness.py"))
    alike = {}
    for same in ("category", "instance", "any", "alike"):
        done = (study.alike_transitive(out / "work") if same == "alike"
                else study.oracle_transitive(out / "work", same))
        ids, instance, category, a, p = transitive_labels()
        assert done["rewritten"] == len(a) > 0
        assert (category[a] >= 0).all() and (category[p] >= 0).all()
        if same == "category":
            assert (category[a] == category[p]).all() and (instance[a] != instance[p]).all()
        elif same == "instance":
            assert (instance[a] == instance[p]).all() and (ids[a] != ids[p]).all()
        else:   # --random-transitive, --alike-transitive: another instance, whatever its category
            assert (instance[a] != instance[p]).all()
            assert (category[a] != category[p]).any() or same == "alike"
        # experiments/pair_likeness.py reads the same pairs and labels
        liked = likeness.likeness(out / "work")
        assert liked["pairs"] == len(a)
        assert liked["one_category"] == pytest.approx(np.mean(category[a] == category[p]))
        assert liked["one_instance"] == pytest.approx(np.mean(instance[a] == instance[p]))
        for q in liked["similarity"].values():
            assert -1 <= q[0] <= q[1] <= q[2] <= 1.0001
        alike[same] = liked["similarity"]["colour histogram"][1]
    assert alike["alike"] > alike["any"]   # the most alike in colour, not a random draw
    assert likeness.main([str(out), "--labels", "any", "--out", str(tmp_path / "alike"),
                          "--chart", str(tmp_path / "alike.png")]) == 0
    assert "| any | " in (tmp_path / "alike" / "results.md").read_text()
    assert (tmp_path / "alike.png").stat().st_size > 0

    # --oracle-clusters: the clusters training reads are the categories, for every crop with
    # ground truth, and no other crop is in one.
    from vidmine.training.data import read_crop_table

    with pytest.raises(SystemExit, match="goes with --oracle-transitive"):
        study.main(["--oracle-clusters", "--out", str(out)])
    made = study.oracle_clusters(out / "work")
    with Store(StorageConfig(workdir=str(out / "work")), create=False) as store:
        with store.index.read() as conn:
            table = read_crop_table(conn)
    rows = lookup_sorted(table.ids, ids)
    assert made["clustered"] == (category >= 0).sum() > 0
    assert (table.cluster[rows] == category).all()
    assert (table.cluster[np.setdiff1d(np.arange(len(table)), rows)] == -1).all()

    # Arms that do not read the graph, resumed in a folder whose graph was bootstrapped: its
    # pairs and their quality are still those reported.
    (out / "results.md").unlink()
    assert study.main([*argv, "--arms", "moco-none"]) == 0
    table = (out / "results.md").read_text()
    assert "Pairs per source after the bootstrap: " in table and "| bootstrap network | " in table

    # Videos moved after mining: their truth is not where the index says; a clear stop.
    from vidmine.storage.schema import videos
    with Store(StorageConfig(workdir=str(out / "work")), create=False) as store:
        with store.index.write() as conn:
            conn.execute(videos.update().values(path="/nowhere/" + videos.c.path))
    with pytest.raises(SystemExit, match="no crop has rendered ground truth"):
        study.oracle_clusters(out / "work")


def test_time_left_from_the_speed_each_objective_trained_at(tmp_path):
    study = _load(STUDY)
    p = {"steps": 100, "batch_size": 60}   # 6,000 pairs a training
    assert study.time_left_line(tmp_path, ["moco"], p, None) is None   # nothing measured yet
    (tmp_path / "train-bootstrap.json").write_text(json.dumps({"pairs_per_s": 50.0}))
    # only the triplet loss measured: MoCo is costed at its speed, 2 min a training
    assert study.time_left_line(tmp_path, ["moco", "moco"], p, None) == (
        "study: 2 trainings left, about 4 min at the pairs/s this machine trained at so far "
        "(triplet 50)")
    (tmp_path / "train-moco-none-s1.json").write_text(json.dumps({"pairs_per_s": 100.0}))
    (tmp_path / "train-retired-arm-s1.json").write_text(json.dumps({"pairs_per_s": 1.0}))
    (tmp_path / "train-moco-tracker-s1.json").write_text(json.dumps({"pairs_per_s": 0.0}))
    line = study.time_left_line(tmp_path, ["moco", "moco", "triplet"], p, 3.0)
    assert line == ("study: 3 trainings left, about 4 min at the pairs/s this machine trained "
                    "at so far (moco 100, triplet 50); the deadline comes in 3 min: run the "
                    "same command again to go on")
    assert "deadline" not in study.time_left_line(tmp_path, ["moco"], p, 3.0)
    assert study.time_left_line(tmp_path, [], p, None) is None


def test_claims_compare_each_arm_with_plain_moco_trained_the_same_way():
    study = _load(STUDY)
    col = "viewpoint (rendered) top10"
    floors = {f: {col: [30.0]} for f in study.FLOOR_NAMES}
    values = {**floors,
              "moco-none": {col: [40.0, 41.0, 42.0]},
              "moco-none-nocolour": {col: [44.0, 45.0, 46.0]},
              "moco-tracker-nocolour": {col: [43.0, 44.0, 45.0]},
              "moco-tracker": {col: [41.0, 42.0, 43.0]},
              "moco-none-nocolour-othervideos": {col: [40.0, 40.0, 40.0]},
              "moco-tracker-nocolour-othervideos": {col: [42.0, 42.0, 42.0]},
              "moco-none-nocolour-fromnone": {col: [47.0, 47.0, 47.0]},
              "moco-transitive-nocolour-fromnone": {col: [45.0, 45.0, 45.0]},
              "moco-transitive-nocolour-queue2048": {col: [44.0, 44.0, 44.0]}}
    lines = study.claims(values, ["viewpoint (rendered)"], list(values)[len(floors):])
    above = "above {} by more than 2 sd: {}"
    assert ("- viewpoint (rendered): moco-tracker-nocolour "
            + above.format("moco-none-nocolour", "no (-1.0)")) in lines
    assert ("- viewpoint (rendered): moco-tracker-nocolour-othervideos "   # sd 0 on both sides
            + above.format("moco-none-nocolour-othervideos", "yes (+2.0)")) in lines
    assert ("- viewpoint (rendered): moco-transitive-nocolour-fromnone "  # its control: same start
            + above.format("moco-none-nocolour-fromnone", "no (-2.0)")) in lines
    # no plain MoCo arm was trained with its flags: compared with the floors only
    assert not any(line.startswith("- viewpoint (rendered): moco-transitive-nocolour-queue2048")
                   for line in lines)
    assert "  - Top-10: moco-transitive-nocolour-queue2048 above every floor by more than 2 sd: " \
        "yes" in lines
    assert ("- viewpoint (rendered): moco-tracker "    # +1.0 with an sd of 1.0: within noise
            + above.format("moco-none", "no, but in that direction (+1.0)")) in lines
    assert not any(line.startswith("- viewpoint (rendered): moco-none") for line in lines)
    assert "  - Top-10: moco-none-nocolour above every floor by more than 2 sd: yes" in lines
    assert not any(line.startswith("  - Top-25") for line in lines)   # not measured: no claim

    # One seed has no sd: a margin over the floors is reported, not judged.
    one_seed = {**floors, "moco-none": {col: [44.0]}, "moco-tracker": {col: [45.0]}}
    lines = study.claims(one_seed, ["viewpoint (rendered)"], ["moco-none", "moco-tracker"])
    assert "  - Top-10: moco-none above every floor by more than 2 sd: untested (one seed; " \
        "lowest margin +14.0)" in lines
    assert ("- viewpoint (rendered): moco-tracker above moco-none by more than 2 sd: "
            "untested (one seed) (+1.0)") in lines

    occlusion = "occlusion (rendered) top10"
    level = {**{f: {occlusion: [30.0]} for f in study.FLOOR_NAMES},
             "moco-none": {occlusion: [40.0, 41.0, 42.0]}, "moco-tracker": {occlusion: [43.0, 44.0, 45.0]},
             "moco-tracker-nocolour": {occlusion: [41.0, 42.0, 43.0]},
             "moco-none-nocolour": {occlusion: [40.0, 41.0, 42.0]}}
    lines = study.claims(level, [], list(level)[len(floors):])
    assert ("- occlusion (rendered): moco-tracker not above moco-none by more than 2 sd: no "
            "(+3.0)") in lines
    assert ("- occlusion (rendered): moco-tracker-nocolour not above moco-none-nocolour by more "
            "than 2 sd: yes (+1.0)") in lines


def test_turn_between_views():
    """The turn of a pair is the angle of the rotation between its views: a rotation by
    theta about any axis turns by theta, and the viewpoint set's turntable spans 25 degrees
    (neighbouring elevations) to 180 (opposite azimuths)."""
    from vidmine.graph.quality import turn_degrees
    from vidmine.mining.render import rotation
    rng = np.random.default_rng(0)
    base = np.stack([rotation(rng.normal(size=3), a) for a in rng.uniform(0, 6, 20)])
    theta = rng.uniform(0, np.pi, 20)
    turned = np.stack([rotation(rng.normal(size=3), t) @ b for t, b in zip(theta, base)])
    assert np.allclose(turn_degrees(base, turned), np.degrees(theta), atol=1e-6)
    assert np.allclose(turn_degrees(turned, base), np.degrees(theta), atol=1e-6)
    assert np.isnan(turn_degrees(np.full((1, 3, 3), np.nan), base[:1])).all()

    views = _load(STUDY.with_name("pair_views.py"))
    set_turns = views.viewpoint_set_turns()
    assert set_turns.min() == pytest.approx(25.0) and set_turns.max() == pytest.approx(180.0)
    study = _load(STUDY)
    assert set(study.PAIR_FLAGS) <= set(study.ABLATION_ARMS)
    assert set(study.START_FROM) | set(study.START_FROM.values()) <= set(study.ALL_ARMS)


def _processes_with(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:  # gone meanwhile
            pass
    return pids


@pytest.mark.slow
def test_a_study_stopped_by_sigterm_stops_its_training(tmp_path):
    """`kill` of the study must not leave its training running: a study started again would
    share the CPU with it (2 cores: several times slower)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "study"
    study = subprocess.Popen([sys.executable, str(STUDY), "--scale", "toy", "--seeds", "0",
                              "--arms", "moco-none", "--synth-train", "2", "--steps", "100000",
                              "--out", str(out)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    run_dir = str(out / "runs" / "moco-none-s0")
    try:
        deadline = time.monotonic() + 240
        while not any(pid != study.pid for pid in _processes_with(run_dir)):
            assert study.poll() is None and time.monotonic() < deadline, "training never started"
            time.sleep(0.5)
        study.send_signal(signal.SIGTERM)
        assert study.wait(timeout=60) == 128 + signal.SIGTERM
        assert _processes_with(run_dir) == []
    finally:  # a failure here must not leave a training running beside the other tests
        study.kill()
        for pid in _processes_with(run_dir):
            os.kill(pid, signal.SIGKILL)
