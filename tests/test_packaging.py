"""Packaging: one installed name, ``vidmine``; the folders of the checkout map into it."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("vidmine", "mining", "graph", "storage", "training", "evaluation")


def test_the_wheel_holds_one_top_level_package(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in PACKAGE_FOLDERS:
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(tmp_path / "dist"), str(src)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "is absent from the `packages` configuration" not in res.stderr
    (wheel,) = (tmp_path / "dist").glob("vidmine-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"vidmine", wheel.name.split("-py")[0] + ".dist-info"}
    for sub in PACKAGE_FOLDERS[1:]:
        assert f"vidmine/{sub}/__init__.py" in names
    assert "vidmine/storage/migrations/script.py.mako" in names
    assert any(n.startswith("vidmine/storage/migrations/versions/") for n in names)


def test_the_namespace_imports_from_anywhere_and_the_bare_names_do_not(tmp_path):
    code = ("import importlib.util, vidmine.storage, vidmine.training.cli; "
            "print([importlib.util.find_spec(n) is None for n in "
            "('storage', 'mining', 'graph', 'training', 'evaluation')])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[True, True, True, True, True]"
    res = subprocess.run([sys.executable, "-m", "vidmine.training.cli", "--help"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0 and "vidmine-train" in res.stdout, res.stderr


def test_the_trainer_benchmark_runs_as_make_bench_calls_it(tmp_path):
    # `python benchmarks/train.py` puts benchmarks/ on the path, not the checkout's root,
    # yet its default store is filled by the test factories.
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train.py"), "--steps", "2",
                          "--warmup", "1", "--crops", "64", "--workers", "0", "--batch-size", "8",
                          "--image-size", "32", "--crop-size", "48", "--json"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads(res.stdout[res.stdout.index("{"):])
    assert result["synthetic_pairs_per_s"] > 0 and result["real_pairs_per_s"] > 0
