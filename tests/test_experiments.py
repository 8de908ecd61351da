"""experiments/study.py end to end at the smallest scale, with the CLIs called in-process:
every arm trains, every network is evaluated, the table is written, and a second run of the
same command reuses every stage instead of redoing it."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

STUDY = Path(__file__).resolve().parents[1] / "experiments" / "study.py"


def _study():
    spec = importlib.util.spec_from_file_location("study", STUDY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_study_smoke(tmp_path, capsys):
    study = _study()
    out = tmp_path / "study"
    argv = ["--scale", "toy", "--seeds", "0", "--out", str(out), "--real-videos", "none",
            "--synth-train", "3", "--synth-heldout", "2", "--steps", "2",
            "--bootstrap-steps", "2", "--in-process"]
    assert study.main(argv) == 0
    result = json.loads((out / "results.json").read_text())

    assert result["data"]["train"]["crops"] > 0 and result["data"]["heldout"]["tracks"] >= 2
    assert result["stages"]["graph-bootstrap"]["pairs"]["transitive"] > 0
    arms = set(study.ARMS) | {"untrained resnet18"}
    assert {study.arm_of(r["model"]) for r in result["ris"]} == arms
    assert {study.arm_of(r["model"]) for r in result["retrieval"]} == arms
    assert any("[synthetic]" in r["invariance"] for r in result["ris"])
    table = (out / "results.md").read_text()
    assert "CPU smoke check" in table and "| moco-tracker | 1 |" in table
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
