"""``vidmine-graph`` as a user runs it: JSON that parses, one-line errors, safe HTML."""
from __future__ import annotations

import json

import cv2
import pytest
from sqlalchemy import select, update

from tests.factories import fill_store
from tests.test_graph_build import IMAGES
from vidmine.graph.cli import main
from vidmine.storage.cli import main as store_main
from vidmine.storage.schema import pairs, videos
from vidmine.storage.store import StorageConfig, Store

HOSTILE = '/videos/<script>alert("x")</script> & <img src=x onerror=y>.mp4'


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv) -> dict:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)  # exactly one JSON object on stdout, nothing else


@pytest.fixture
def workdir(tmp_path):
    path = tmp_path / "work"
    store = Store(StorageConfig(workdir=str(path)))
    fill_store(store, n_videos=4, tracks_per_video=3, crops_per_track=4, seed=0, images_dir=IMAGES)
    with store.index.write() as conn:
        conn.execute(update(videos).where(videos.c.id == 1).values(path=HOSTILE))
    store.close()
    return str(path)


def test_the_whole_cli_prints_parsable_json(workdir, tmp_path, capsys):
    w = ("--workdir", workdir)
    assert run_json(capsys, "embed", *w)["embedded"] == 48
    built = run_json(capsys, "build", *w, "--intra-mode", "stride", "--val-fraction", "0.3")
    assert built["nodes"] == 48 and built["new_inter_edges"] > 0

    stats = run_json(capsys, "stats", *w)
    assert stats["nodes"] == 48 and stats["edges"]["intra"] == 36
    assert stats["pairs"]["total"] == sum(built["new_pairs"].values())
    assert stats["components"]["count"] >= 1 and stats["clusters"]["count"] == built["clusters"]
    assert sum(stats["degree_histogram"].values()) == 48

    shown = run_json(capsys, "show", "5", *w, "--png", str(tmp_path / "show.png"))
    assert shown["node"]["crop"] == 5 and any(e["kind"] == "intra" for e in shown["edges"])
    assert cv2.imread(shown["png"]) is not None

    store = Store(StorageConfig(workdir=workdir))
    with store.index.read() as conn:
        transitive = conn.execute(select(pairs).where(pairs.c.kind == "transitive")).first()
    store.close()
    by_id = run_json(capsys, "explain", str(transitive.id), *w)
    by_crops = run_json(capsys, "explain", f"{transitive.positive},{transitive.anchor}", *w)
    assert by_id == by_crops and by_id["kind"] == "transitive" and len(by_id["chain"]) >= 2
    code, text, _ = run(capsys, "explain", str(transitive.id), *w)
    assert code == 0 and f"pair {transitive.id} (transitive" in text and "-inter-" in text

    for what in ("tracks", "clusters", "pairs"):
        sheet = run_json(capsys, "sheet", what, *w, "--n", "3", "--out", str(tmp_path / f"{what}.png"))
        assert sheet["rows"] >= 1 and cv2.imread(sheet["path"]) is not None

    code = store_main(["verify", *w, "--json"])
    verify = json.loads(capsys.readouterr().out)
    assert code == 0 and verify["ok"] and verify["graph"]["videos_in_both_splits"] == 0


def test_html_export_escapes_hostile_names_and_works_offline(workdir, tmp_path, capsys):
    run_json(capsys, "embed", "--workdir", workdir)
    run_json(capsys, "build", "--workdir", workdir)
    report = run_json(capsys, "export", "--html", str(tmp_path / "gallery"), "--workdir", workdir)
    page = (tmp_path / "gallery" / "index.html").read_text()
    assert report["thumbnails"] > 0 and report["clusters"] > 0
    assert "<script" not in page and "onerror=y>" not in page
    assert ('title="/videos/&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; '
            '&lt;img src=x onerror=y&gt;.mp4"') in page
    assert "http://" not in page and "https://" not in page
    for src in page.split('src="')[1:]:
        assert (tmp_path / "gallery" / src.split('"')[0]).is_file()


@pytest.mark.parametrize("argv, message", [
    (("show", "99999"), "no crop 99999 in the index"),
    (("show", "1"), "no graph yet"),
    (("explain", "1"), "no graph pair with id 1"),
    (("explain", "nonsense"), "a pair is an id"),
    (("sheet", "pairs"), "no graph yet"),
    (("build", "--intra-mode", "diagonal"), "intra_mode='diagonal': choose one of"),
])
def test_errors_are_one_line(workdir, capsys, argv, message):
    code, out, err = run(capsys, *argv, "--workdir", workdir)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("vidmine-graph: error: ") and message in err


def test_empty_store_and_missing_workdir(tmp_path, capsys):
    Store(StorageConfig(workdir=str(tmp_path / "empty"))).close()
    for command in ("stats", "embed", "build"):
        code, _, err = run(capsys, command, "--workdir", str(tmp_path / "empty"))
        assert code == 2 and "no object crops yet" in err and err.count("\n") == 1
    code, _, err = run(capsys, "stats", "--workdir", str(tmp_path / "absent"))
    assert code == 2 and "no vidmine work directory" in err
