"""One study's table from parts run apart: other seeds of one study, each part a run of
experiments/study.py with the same settings in its own folder (e.g. one session each, on a
machine that keeps nothing between sessions: on one machine and library build the rendered
videos are the same bytes each time, so every part trains on the same data).

    python experiments/merge_studies.py PART_DIR [PART_DIR ...] --out DIR

A part is a study's output folder (its results.json) or a results .json file of one, e.g. an
earlier table of the same folder kept under another name.

Parts may also hold other arms of one seed (e.g. the tracker arm run after plain MoCo):
each arm of each seed comes from one part, and the untrained network of a seed, which every
part that holds the seed evaluates, is kept once, after checking that it scored the same.

A part is refused when its settings differ from the first part's, when it mined other
tracks or crops, or its floors scored otherwise (other data), when two parts hold one arm of
one seed, and when two parts' untrained networks of one seed scored otherwise. Writes
DIR/results.md, DIR/results.json and DIR/ris_top10.png, as a study does, with each part's
command, commits and data, and the pair quality of each part's graph where it differs.

Another machine or another build of PyAV, x264 or OpenCV may render and mine slightly other
data from the same command (docs/study.md, Protocol). ``--other-data`` merges such parts
when their tracks and crops are within 1 % of the first part's and every floor, and each
seed's untrained network, within 0.5 (RIS points; retrieval x100); the floors in the table
are the first part's.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))  # experiments/ is not a package
import study  # noqa: E402
from study import FLOOR_NAMES, arm_of, seed_of, settings_changes, write_results  # noqa: E402

# Floors that do not depend on a seed; the untrained network has one initialisation per seed.
DESCRIPTORS = tuple(f for f in FLOOR_NAMES if "(floor)" in f)


def load(part: Path) -> dict:
    # a part's folder, or one of its results files (a study's earlier table kept beside it)
    path = part if part.suffix == ".json" else part / "results.json"
    if not path.is_file():
        raise SystemExit(f"merge: {path} does not exist (neither a study's output folder nor a "
                         "results file of one)")
    return json.loads(path.read_text())


def settings_of(result: dict) -> dict:
    # results.json records its settings since 2026-12-03; before, the preset holds them. A
    # setting added later has the value every folder made before it was made with.
    return {**study.SETTINGS_ADDED_LATER,
            **(result.get("settings") or {"scale": result["scale"],
                                          **{k: result["preset"][k] for k in study.RESULT_SETTINGS}})}


# With --other-data, how far a part's data may be from the first part's.
MINED_TOLERANCE = 0.01      # tracks and crops, relative
SCORE_TOLERANCE = 0.5       # a floor's or an untrained network's score: RIS points, retrieval x100
TOLERANCES = f"within {MINED_TOLERANCE * 100:g} % of tracks and crops and {SCORE_TOLERANCE} per floor"


def data_of(result: dict) -> dict:
    """What the part's data decides: what mining found and what the floors score (x100)."""
    mined = result["stages"]["mine-train"]
    floors = {(r["model"], r.get("invariance", "retrieval")):
              round(r["top10"] if "top10" in r else 100 * r["mAP"], 4)
              for r in result["ris"] + result["retrieval"] if r["model"] in DESCRIPTORS}
    return {"tracks": mined["tracks"], "crops": mined["crops"], "floors": floors}


def data_gap(first: dict, other: dict, tolerate: bool) -> str | None:
    """None when ``other`` is ``first``'s data (with ``tolerate``: near it); else how not."""
    if other == first:
        return None
    moved = [f"{k} {first[k]} -> {other[k]}" for k in ("tracks", "crops") if first[k] != other[k]]
    if set(other["floors"]) != set(first["floors"]):
        return "; ".join(moved + ["other floors or sets"])
    drift = max(abs(other["floors"][key] - score) for key, score in first["floors"].items())
    if drift:
        moved.append(f"floors moved by up to {drift:.2f}")
    near = all(abs(other[k] - first[k]) <= MINED_TOLERANCE * first[k] for k in ("tracks", "crops"))
    return None if tolerate and near and drift <= SCORE_TOLERANCE else "; ".join(moved)


def seeded(result: dict, kind: str) -> list[tuple[int, dict]]:
    """A part's rows of ``kind`` that depend on a seed, each with its seed. A trained
    network's name holds it (<arm>-s<seed>/final); the untrained network's rows carry it
    since 2026-12-03, and before then only by their order: one per set and seed, in the
    order the part's command gave its seeds."""
    argv = shlex.split(result["command"])
    asked = study.build_parser().parse_known_args(argv[2:])[0].seeds
    order = [s for s in asked if s in result["seeds"]]
    seen: dict[tuple, int] = {}
    out = []
    for r in result[kind]:
        if r["model"] in DESCRIPTORS:
            continue
        seed = r["seed"] if "seed" in r else seed_of(r["model"])
        if seed is None:
            key = (r["model"], r.get("invariance"))
            seen[key] = seen.get(key, -1) + 1
            if seen[key] >= len(order):
                raise SystemExit(f"merge: more rows of {r['model']} than seeds in {argv}")
            seed = order[seen[key]]
        out.append((seed, r))
    return out


def same_scores(a: dict, b: dict, tolerance: float) -> bool:
    """Whether two rows of one network score the same, to ``tolerance`` (RIS points;
    retrieval x100) or, with none, to rounding."""
    return all(abs(a[k] - b[k]) * scale <= (tolerance or 1e-4)
               for k, scale in (("top10", 1), ("top25", 1), ("mAP", 100), ("recall@1", 100)) if k in a)


def rendered_on(result: dict) -> str:
    env = result["stages"]["data"].get("environment")
    return study.environment_line(env) if env else "machine and libraries not recorded"


def merge(parts: list[Path], other_data: bool = False
          ) -> tuple[SimpleNamespace, dict, dict, list, list, dict]:
    results = [load(p) for p in parts]
    datas = [data_of(r) for r in results]
    first, settings = results[0], settings_of(results[0])
    for part, result, data in zip(parts, results, datas):
        if changed := settings_changes(settings, settings_of(result)):
            raise SystemExit(f"merge: {part} was run with other settings than {parts[0]}: "
                             + "; ".join(changed))
        if gap := data_gap(datas[0], data, other_data):
            hint = "" if other_data else f"; --other-data merges data {TOLERANCES}"
            raise SystemExit(f"merge: {part} was made from other data than {parts[0]} ({gap}; "
                             f"rendered on {rendered_on(result)}, against "
                             f"{rendered_on(first)}){hint}")
    tolerance = SCORE_TOLERANCE if other_data else 0.0

    def per_seed(kind: str) -> list[dict]:
        """Each arm of each seed from the one part that holds it; the untrained network of a
        seed from the first part that holds the seed, the others checked against it."""
        owner: dict[tuple[str, int, str | None], tuple[Path, dict]] = {}
        rows = []
        for part, result in zip(parts, results):
            for seed, r in seeded(result, kind):
                arm = arm_of(r["model"])
                key = (arm, seed, r.get("invariance"))
                if key not in owner:
                    owner[key] = part, r
                    rows.append({**r, "seed": seed})   # a merged table is a part too
                elif arm in FLOOR_NAMES:
                    if not same_scores(owner[key][1], r, tolerance):
                        raise SystemExit(
                            f"merge: the {arm} network of seed {seed} scored otherwise in "
                            f"{owner[key][0]} and {part} ({r.get('invariance', 'retrieval')})")
                else:
                    raise SystemExit(f"merge: {arm} of seed {seed} is in both {owner[key][0]} "
                                     f"and {part}")
        return rows

    ris = [r for r in first["ris"] if r["model"] in DESCRIPTORS] + per_seed("ris")
    retrieval = [r for r in first["retrieval"] if r["model"] in DESCRIPTORS] + per_seed("retrieval")
    seeds = sorted({s for result in results for s in result["seeds"]})
    state = dict(first["stages"])
    for result in results[1:]:  # each part's own training and evaluation stages
        state.update({k: v for k, v in result["stages"].items() if k not in state})
    arms = list(dict.fromkeys(a for result in results for a in result["summary"]
                              if a not in FLOOR_NAMES))
    args = SimpleNamespace(scale=first["scale"], arms=arms, seeds=seeds,
                           tracker=settings.get("tracker", "kcf"))
    made = {"commits": list(dict.fromkeys(c for r in results for c in r["commits"])),
            "device": "; ".join(dict.fromkeys(r["device"] for r in results)),
            "settings": settings,
            "parts": [{"dir": str(part), "command": r["command"], "commits": r["commits"],
                       "seeds": r["seeds"], "tracks": data["tracks"], "crops": data["crops"],
                       "rendered_on": rendered_on(r),
                       "pair_quality": study.graph_quality(r["stages"])}
                      for part, r, data in zip(parts, results, datas)]}
    return args, first["preset"], state, ris, retrieval, made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="merge_studies", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="+", type=Path,
                        help="output folders of study runs, or results .json files of them")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--other-data", action="store_true",
                        help="merge parts whose data differ a little (another machine or "
                             f"library build rendered them): {TOLERANCES}".replace("%", "%%"))
    args = parser.parse_args(argv)
    study_args, preset, state, ris, retrieval, made = merge(args.parts, args.other_data)
    made["command"] = shlex.join(["python", "experiments/merge_studies.py", *map(str, args.parts),
                                  *["--other-data"] * args.other_data, "--out", str(args.out)])
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(args.out, study_args, preset, state, ris, retrieval, made)
    print(f"merge: seeds {' '.join(map(str, study_args.seeds))} of {len(args.parts)} parts in "
          f"{args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
