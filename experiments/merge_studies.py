"""One study's table from parts run apart: other seeds of one study, each part a run of
experiments/study.py with the same settings in its own folder (e.g. one session each, on a
machine that keeps nothing between sessions: the rendered videos are the same bytes each
time, so every part trains on the same data).

    python experiments/merge_studies.py PART_DIR [PART_DIR ...] --out DIR

A part is refused when its settings differ from the first part's, when it mined other
tracks or crops, or its floors scored otherwise (other data), and when two parts hold one
seed. Writes DIR/results.md, DIR/results.json and DIR/ris_top10.png, as a study does, with
each part's command and commits.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))  # experiments/ is not a package
from study import FLOOR_NAMES, RESULT_SETTINGS, settings_changes, write_results  # noqa: E402

# Floors that do not depend on a seed; the untrained network has one initialisation per seed.
DESCRIPTORS = tuple(f for f in FLOOR_NAMES if "(floor)" in f)


def load(part: Path) -> dict:
    path = part / "results.json"
    if not path.is_file():
        raise SystemExit(f"merge: {path} does not exist (not the output folder of a study)")
    return json.loads(path.read_text())


def settings_of(result: dict) -> dict:
    # results.json records its settings since 2026-12-03; before, the preset holds them
    return result.get("settings") or {"scale": result["scale"],
                                      **{k: result["preset"][k] for k in RESULT_SETTINGS}}


def data_of(result: dict) -> dict:
    """What the part's data decides: what mining found and what the floors score."""
    mined = result["stages"]["mine-train"]
    floors = [(r["model"], r.get("invariance", "retrieval"), round(r.get("top10", r.get("mAP")), 6))
              for r in result["ris"] + result["retrieval"] if r["model"] in DESCRIPTORS]
    return {"tracks": mined["tracks"], "crops": mined["crops"], "floors": sorted(floors)}


def merge(parts: list[Path]) -> tuple[SimpleNamespace, dict, dict, list, list, dict]:
    results = [load(p) for p in parts]
    first, settings, data = results[0], settings_of(results[0]), data_of(results[0])
    owner: dict[int, Path] = {}
    for part, result in zip(parts, results):
        if changed := settings_changes(settings, settings_of(result)):
            raise SystemExit(f"merge: {part} was run with other settings than {parts[0]}: "
                             + "; ".join(changed))
        if data_of(result) != data:
            raise SystemExit(f"merge: {part} was made from other data than {parts[0]} (other "
                             "mined tracks, crops or floor scores)")
        for seed in result["seeds"]:
            if seed in owner:
                raise SystemExit(f"merge: seed {seed} is in both {owner[seed]} and {part}")
            owner[seed] = part

    def per_seed(kind: str) -> list[dict]:
        return [r for result in results for r in result[kind] if r["model"] not in DESCRIPTORS]

    ris = [r for r in first["ris"] if r["model"] in DESCRIPTORS] + per_seed("ris")
    retrieval = [r for r in first["retrieval"] if r["model"] in DESCRIPTORS] + per_seed("retrieval")
    state = dict(first["stages"])
    for result in results[1:]:  # each part's own training and evaluation stages
        state.update({k: v for k, v in result["stages"].items() if k not in state})
    arms = list(dict.fromkeys(a for result in results for a in result["summary"]
                              if a not in FLOOR_NAMES))
    args = SimpleNamespace(scale=first["scale"], arms=arms, seeds=sorted(owner),
                           tracker=settings.get("tracker", "kcf"))
    made = {"commits": list(dict.fromkeys(c for r in results for c in r["commits"])),
            "device": "; ".join(dict.fromkeys(r["device"] for r in results)),
            "settings": settings,
            "parts": [{"dir": str(part), "command": r["command"], "commits": r["commits"],
                       "seeds": r["seeds"]} for part, r in zip(parts, results)]}
    return args, first["preset"], state, ris, retrieval, made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="merge_studies", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="+", type=Path, help="output folders of study runs")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    study_args, preset, state, ris, retrieval, made = merge(args.parts)
    made["command"] = shlex.join(["python", "experiments/merge_studies.py",
                                  *map(str, args.parts), "--out", str(args.out)])
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(args.out, study_args, preset, state, ris, retrieval, made)
    print(f"merge: seeds {' '.join(map(str, study_args.seeds))} of {len(args.parts)} parts in "
          f"{args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
