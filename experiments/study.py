"""Issue 8: do pairs mined from video teach invariances that plain instance discrimination
does not? One command mines a fixed set of videos, builds the graph (with the paper's
bootstrap), trains one backbone under four arms with one budget, and evaluates them all:

    python experiments/study.py --scale gpu --seeds 0 1 2          # the study (GPU)
    python experiments/study.py --scale toy --seeds 0              # CPU smoke check

Arms (same backbone, steps, batch, image size, learning rate):
    moco-none           MoCo v2, two augmentations of one crop (instance discrimination)
    moco-tracker        MoCo v2, two crops of one track 5-150 frames apart (Region Tracker)
    moco-transitive     MoCo v2, transitive pairs (intra + inter variation at once)
    triplet-transitive  triplet ranking loss on transitive pairs (Wang, He, Gupta 2017)

Training and evaluation use two work directories mined from disjoint videos: the derived
sources (none, tracker) read every crop of a work directory, so held-out tracks living
beside the training crops would leak into two of the four arms.

Every stage leaves its result under --out and is skipped when run again, so a run cut short
(by --deadline-min or a lost machine) continues where it stopped with the same command.
Results: <out>/results.md and <out>/results.json.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARMS = {
    "moco-none": ("moco", "none:1"),
    "moco-tracker": ("moco", "tracker:1"),
    "moco-transitive": ("moco", "transitive:1"),
    "triplet-transitive": ("triplet", "transitive:1"),
}
# box and cup turn real objects in 3D: the only real viewpoint change in the sample data,
# so they are held out for evaluation; the two Megamind clips are mined for training.
HELDOUT_REAL = ("box.mp4", "cup.mp4")
PRESETS = {
    # A CPU smoke check of the plumbing: says nothing about the claim.
    "toy": dict(synth_train=4, synth_heldout=2, steps=6, bootstrap_steps=4, batch_size=8,
                image_size=32, moco_queue=64, warmup_steps=0, workers=0,
                mine_workers=2, variants=3, eval_batch=64, max_tracks=300),
    # ResNet-18 at 112 px on one H100; 14-27 crops and 2-3 tracks per synthetic video (CPU
    # measurement), so ~11k-21k training crops. 1000 steps x 256 pairs is a guess at a few
    # minutes per run (the issue allows 10): every run's wall time lands in the results.
    # The queue stays well under the crop count so it rarely holds the anchor's own
    # instance as a negative.
    "gpu": dict(synth_train=800, synth_heldout=100, steps=1000, bootstrap_steps=500,
                batch_size=256, image_size=112, moco_queue=2048, warmup_steps=100,
                workers=8, mine_workers=min(14, os.cpu_count() or 1), variants=8,
                eval_batch=512, max_tracks=1000),
}
# Longer tracks, every sampled frame kept, 12 fps: ~3x the crops of the defaults per video.
MINING = ["--sample-fps", "12", "--track-span", "60", "--crop-stride", "1", "--stable-s", "0",
          "--sheet", "none"]


class OutOfTime(Exception):
    """--deadline-min passed before a stage started."""


MODULES = {"vidmine-mine": "vidmine.mining.cli", "vidmine-graph": "vidmine.graph.cli",
           "vidmine-train": "vidmine.training.cli", "vidmine-eval": "vidmine.evaluation.cli"}


class Cli:
    """Runs the vidmine CLIs; with --json, returns their one JSON object. Each call is a
    fresh process (GPU memory, loader workers and seeds start clean), or with ``in_process``
    a call of the CLI's ``main(argv)`` here: the same code without ~7 s of imports per call,
    for smoke checks."""

    def __init__(self, log: Path, in_process: bool = False):
        self.log, self.in_process = log, in_process

    def __call__(self, name: str, *args) -> dict:
        argv = [str(a) for a in args]
        with self.log.open("a") as err:
            err.write(f"\n$ {name} {shlex.join(argv)}\n")
            err.flush()
            if self.in_process:
                main = importlib.import_module(MODULES[name]).main
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
                    code = main(argv)
                stdout = buf.getvalue()
            else:
                proc = subprocess.run(self.command(name, argv), stdout=subprocess.PIPE,
                                      stderr=err, text=True, cwd=ROOT)
                code, stdout = proc.returncode, proc.stdout
        if code != 0:
            raise SystemExit(f"study: {name} {argv[0]} failed (exit {code}); see {self.log}\n"
                             + "\n".join(self.log.read_text(errors="replace").splitlines()[-15:]))
        return json.loads(stdout) if "--json" in argv else {}

    @staticmethod
    def command(name: str, argv: list[str]) -> list[str]:
        # `python -m` from the repository root: works where the console scripts are not
        # installed (a bare GPU machine with the dependencies carried as wheels).
        return [sys.executable, "-m", MODULES[name], *argv]

    def synth(self, folder: Path, n: int, base_seed: int, parallel: int) -> None:
        """``n`` synthetic videos from up to ``parallel`` generator calls with distinct seeds
        (one generator call is one process)."""
        chunks = [c for c in np.array_split(np.arange(n), max(1, min(parallel, n))) if len(c)]
        specs = [["synth", str(folder), "--videos", str(len(c)), "--seed", str(base_seed + i)]
                 for i, c in enumerate(chunks)]
        if self.in_process:
            for argv in specs:
                self("vidmine-mine", *argv)
            return
        with self.log.open("a") as err:
            procs = [subprocess.Popen(self.command("vidmine-mine", argv), stdout=subprocess.DEVNULL,
                                      stderr=err, cwd=ROOT) for argv in specs]
            if any([proc.wait() != 0 for proc in procs]):  # wait for every one of them
                raise SystemExit(f"study: vidmine-mine synth failed; see {self.log}")


class Stages:
    """Each stage's result is a JSON file in <out>/state: done once, then read back."""

    def __init__(self, out: Path, deadline_s: float | None):
        self.dir = out / "state"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.t0, self.deadline_s = time.perf_counter(), deadline_s

    def run(self, name: str, fn) -> dict:
        path = self.dir / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())
        if self.deadline_s is not None and time.perf_counter() - self.t0 > self.deadline_s:
            raise OutOfTime(name)
        print(f"study: {name} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        result = fn()
        result["wall_s"] = round(time.perf_counter() - t, 1)
        path.write_text(json.dumps(result, indent=2))
        return result


# -- data ------------------------------------------------------------------------------------

def prepare_videos(cli: Cli, out: Path, real_dir: Path | None, n_train: int, n_heldout: int,
                   parallel: int) -> dict:
    # mining.synthetic cuts object and background textures from these photos when they
    # exist (procedural patterns otherwise): recorded, since it changes what is learned.
    photos = ROOT.parent / "shared" / "data" / "images"
    listing: dict = {"texture_photos": len(list(photos.glob("*.jpg")))}
    for split, n, seed in (("train", n_train, 100), ("heldout", n_heldout, 500)):
        folder = out / "videos" / split
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        real = []
        if real_dir is not None and real_dir.is_dir():
            for video in sorted(v for v in real_dir.iterdir() if v.is_file()):
                if (video.name in HELDOUT_REAL) == (split == "heldout"):
                    shutil.copy2(video, folder / video.name)
                    real.append(video.name)
        cli.synth(folder, n, seed, parallel)
        listing[split] = {"real": real, "synthetic": n}
    return listing


def mine(cli: Cli, videos: Path, work: Path, workers: int, tracker: str) -> dict:
    shutil.rmtree(work, ignore_errors=True)  # what an unfinished earlier attempt left
    cli("vidmine-mine", "run", videos, "--workdir", work, "--workers", workers,
        "--tracker", tracker, *MINING, "--json")
    status = cli("vidmine-mine", "status", "--workdir", work, "--json")
    if status["videos"]["done"] == 0:
        raise SystemExit(f"study: no video of {videos} was mined; see {cli.log}")
    return {k: status[k] for k in ("videos", "tracks", "crops", "frames", "failures")}


# -- graph, training, evaluation -------------------------------------------------------------

def graph(cli: Cli, work: Path, p: dict, model: str | None = None) -> dict:
    net = ["--embedding-model", model, "--image-size", p["image_size"]] if model else []
    cli("vidmine-graph", "embed", "--workdir", work, *net, "--json")
    # No val split: the held-out tracks live in their own work directory.
    cli("vidmine-graph", "build", "--workdir", work, "--val-fraction", 0,
        *(["--rebuild"] if model else []), *net, "--json")
    stats = cli("vidmine-graph", "stats", "--workdir", work, "--json")
    sources = cli("vidmine-train", "sources", "--workdir", work, "--json")
    return {"edges": stats.get("edges"), "pairs": sources["pairs"],
            "clustered_crops": sources["clustered_crops"]}


def train(cli: Cli, work: Path, run_dir: Path, objective: str, positives: str, steps: int,
          seed: int, p: dict) -> dict:
    args = ["train", "--workdir", work, "--out", run_dir, "--objective", objective,
            "--positives", positives, "--backbone", "resnet18", "--steps", steps,
            "--batch-size", p["batch_size"], "--image-size", p["image_size"],
            "--warmup-steps", p["warmup_steps"], "--moco-queue", p["moco_queue"],
            "--workers", p["workers"], "--seed", seed, "--checkpoint-every", 250, "--json"]
    if (run_dir / "last.pt").is_file():
        args.append("--resume")  # a run cut short continues its own schedule
    summary = cli("vidmine-train", *args)
    if summary.get("status") != "done":
        raise SystemExit(f"study: training {run_dir.name} ended {summary.get('status')}")
    losses = [row.split(",")[1] for row in (run_dir / "log.csv").read_text().splitlines()[1:]]
    return {"checkpoint": str(run_dir / "final.pt"), "device": summary["device"],
            "pairs_per_s": round(summary["pairs_per_s"], 1), "pairs": summary["pairs"],
            "final_loss": float(losses[-1]) if losses else None}


def evaluate(cli: Cli, kind: str, work: Path, checkpoints: list[str], out: Path, p: dict,
             ris_sets: list[str], untrained: bool) -> dict:
    args = [kind, "--workdir", work, "--size", p["image_size"], "--batch-size", p["eval_batch"],
            "--out", out, "--max-tracks", p["max_tracks"], "--seed", 0, "--json",
            "--untrained" if untrained else "--no-untrained"]
    if kind == "ris":
        args += ["--variants", p["variants"], "--sets", *ris_sets]
    for ckpt in checkpoints:
        args += ["--checkpoint", ckpt]
    return cli("vidmine-eval", *args)


# -- results ---------------------------------------------------------------------------------

def arm_of(model: str) -> str:
    """'moco-none-s2/final' -> 'moco-none'; the untrained floor keeps its name."""
    m = re.fullmatch(r"(.+)-s\d+/final", model)
    return m.group(1) if m else model


def cell(values: list[float], scale: float = 1.0) -> str:
    v = np.asarray(values, float) * scale
    return f"{v[0]:.2f}" if len(v) == 1 else f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"


def aggregate(ris: dict, retrieval: dict) -> tuple[dict, list[str]]:
    """Per arm and measure, the values over seeds; and the markdown tables."""
    values: dict[str, dict[str, list[float]]] = {}
    ks = [k for k in ris["results"][0] if re.fullmatch(r"top\d+", k)]
    invariances = list(dict.fromkeys(r["invariance"] for r in ris["results"]))
    for r in ris["results"]:
        for k in ks:
            values.setdefault(arm_of(r["model"]), {}).setdefault(
                f"{r['invariance']} {k}", []).append(r[k])
    for r in retrieval["results"]:
        for m in ("recall@1", "recall@5", "mAP"):
            values.setdefault(arm_of(r["model"]), {}).setdefault(m, []).append(r[m])
    arms = [a for a in ARMS if a in values] + [a for a in values if a not in ARMS]
    lines = []
    for k in ks:
        lines += [f"Top-{k[3:]} RIS:", "", "| arm | seeds | " + " | ".join(invariances) + " |",
                  "| --- " * (2 + len(invariances)) + "|"]
        lines += [f"| {a} | {len(values[a]['mAP'])} | "
                  + " | ".join(cell(values[a][f"{inv} {k}"]) for inv in invariances) + " |"
                  for a in arms]
        lines.append("")
    lines += [f"Retrieval on {retrieval['tracks']} held-out tracks (x100):", "",
              "| arm | seeds | recall@1 | recall@5 | mAP |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {a} | {len(values[a]['mAP'])} | "
              + " | ".join(cell(values[a][m], 100) for m in ("recall@1", "recall@5", "mAP")) + " |"
              for a in arms]
    summary = {a: {m: {"mean": float(np.mean(v)),
                       "std": float(np.std(v, ddof=1)) if len(v) > 1 else None, "values": v}
                   for m, v in cols.items()} for a, cols in values.items()}
    return summary, lines


def device_name() -> str:
    import torch
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    return (f"CPU only, {platform.machine()}, {os.cpu_count()} cores "
            f"(torch {torch.__version__})")


def git_commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=ROOT)
    return proc.stdout.strip() or "unknown"


def write_results(out: Path, args, p: dict, state: dict, ris: dict, retrieval: dict) -> None:
    summary, tables = aggregate(ris, retrieval)
    command = shlex.join(["python", "experiments/study.py", *args.argv])
    walls = {k: v["wall_s"] for k, v in state.items()}
    data = {split: {**state["data"][split], **{k: state[f"mine-{split}"][k]
                                               for k in ("crops", "tracks", "frames")},
                    "videos_mined": state[f"mine-{split}"]["videos"]["done"],
                    "videos_failed": state[f"mine-{split}"]["videos"]["failed"]}
            for split in ("train", "heldout")}
    pairs = state["graph-bootstrap"]["pairs"]
    seeds = sorted({int(m.group(1)) for r in ris["results"]
                    if (m := re.fullmatch(r".+-s(\d+)/final", r["model"]))})
    trained = {k: v for k, v in state.items() if k.startswith("train-")}
    md = [f"# vidmine study ({args.scale} preset)", ""]
    if args.scale == "toy":
        md += ["**CPU smoke check of the plumbing: these numbers say nothing about the "
               "claim.**", ""]
    md += [f"Command: `{command}` (commit {git_commit()})", "", f"Device: {device_name()}", "",
           f"Budget per arm: ResNet-18, {p['steps']} steps x {p['batch_size']} pairs at "
           f"{p['image_size']} px, MoCo queue {p['moco_queue']}; bootstrap intra network "
           f"{p['bootstrap_steps']} steps; seeds evaluated {' '.join(map(str, seeds))} "
           f"(asked: {' '.join(map(str, args.seeds))}); mining tracker {args.tracker}; "
           f"synthetic objects textured from {state['data']['texture_photos']} photos "
           "(0: procedural textures).", "",
           "| data | videos mined (failed) | synthetic | real | tracks | crops |",
           "| --- | --- | --- | --- | --- | --- |"]
    md += [f"| {split} | {d['videos_mined']} ({d['videos_failed']}) | {d['synthetic']} | "
           f"{', '.join(d['real']) or 'none'} | {d['tracks']} | {d['crops']} |"
           for split, d in data.items()]
    md += ["", "Training pairs per source (graph after the bootstrap): "
           + ", ".join(f"{k} {v}" for k, v in pairs.items()) + ".", "",
           "Mean ± sample std over seeds. Viewpoint sets are held-out tracks; '[synthetic]' "
           "sets are held-out crops under drawn occluders or colour casts.", "", *tables, "",
           "Training throughput (pairs/s): " + ", ".join(
               f"{k[6:]} {v['pairs_per_s']}" for k, v in trained.items()) + ".", "",
           "Wall time per stage (s): " + ", ".join(f"{k} {v}" for k, v in walls.items()) + "."]
    (out / "results.md").write_text("\n".join(md) + "\n")
    (out / "results.json").write_text(json.dumps(
        {"command": command, "commit": git_commit(), "scale": args.scale, "preset": p,
         "seeds": seeds, "device": device_name(), "data": data, "stages": state,
         "summary": summary, "ris": ris["results"], "retrieval": retrieval["results"],
         "retrieval_tracks": retrieval["tracks"]}, indent=2))


# -- the study -------------------------------------------------------------------------------

OVERRIDABLE = ("synth_train", "synth_heldout", "steps", "bootstrap_steps", "batch_size",
               "image_size")


def run_study(args) -> Path:
    p = dict(PRESETS[args.scale])
    p.update({k: getattr(args, k) for k in OVERRIDABLE if getattr(args, k) is not None})
    out = Path(args.out or ROOT / "vidmine-data" / f"study-{args.scale}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    cli = Cli(out / "study.log", in_process=args.in_process)
    stages = Stages(out, None if args.deadline_min is None else args.deadline_min * 60)
    train_work, heldout_work = out / "work-train", out / "work-heldout"
    real = None if args.real_videos == "none" else Path(args.real_videos)

    state = {"data": stages.run("data", lambda: prepare_videos(
        cli, out, real, p["synth_train"], p["synth_heldout"], p["mine_workers"]))}
    for split, work in (("train", train_work), ("heldout", heldout_work)):
        state[f"mine-{split}"] = stages.run(f"mine-{split}", lambda s=split, w=work: mine(
            cli, out / "videos" / s, w, p["mine_workers"], args.tracker))
    # The paper's bootstrap: a network trained on tracking (intra pairs) replaces the
    # hand-crafted descriptor for clustering, so inter edges and transitive pairs are its.
    state["graph-handcrafted"] = stages.run("graph-handcrafted", lambda: graph(cli, train_work, p))
    boot = out / "runs" / "bootstrap-intra"
    state["train-bootstrap"] = stages.run("train-bootstrap", lambda: train(
        cli, train_work, boot, "triplet", "intra:1", p["bootstrap_steps"], 0, p))
    state["graph-bootstrap"] = stages.run("graph-bootstrap", lambda: graph(
        cli, train_work, p, model=str(boot / "final.pt")))

    # Each seed is evaluated once its arms are trained, and the table rewritten, so a study
    # cut short still reports the seeds it finished. The sets are drawn with one fixed seed:
    # every network of every seed is measured on the same images.
    ris, retrieval = {"results": []}, {"results": []}
    tag = "+".join(args.arms)
    for seed in args.seeds:
        checkpoints = []
        for arm in args.arms:
            objective, positives = ARMS[arm]
            key, run_dir = f"train-{arm}-s{seed}", out / "runs" / f"{arm}-s{seed}"
            state[key] = stages.run(key, lambda r=run_dir, o=objective, ps=positives, s=seed:
                                    train(cli, train_work, r, o, ps, p["steps"], s, p))
            checkpoints.append(state[key]["checkpoint"])
        floor = seed == args.seeds[0]  # the untrained network once, not once per seed
        for kind, acc in (("ris", ris), ("retrieval", retrieval)):
            key = f"eval-{kind}-{tag}-s{seed}"
            result = stages.run(key, lambda k=kind, c=checkpoints, s=seed, f=floor: evaluate(
                cli, k, heldout_work, c, out / "eval" / f"{k}-s{s}", p, args.sets, f))
            state[f"eval-{kind}-s{seed}"] = {"wall_s": result["wall_s"]}
            acc["results"] += result["results"]
            acc["tracks"] = result.get("tracks")
        write_results(out, args, p, state, ris, retrieval)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(PRESETS), default="toy")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--out", help="output folder (default vidmine-data/study-<scale>)")
    parser.add_argument("--real-videos", default=str(ROOT.parent / "shared" / "data" / "videos"),
                        help="folder of the sample videos; 'none' for synthetic videos only")
    parser.add_argument("--tracker", default="kcf",
                        help="mining tracker: kcf needs opencv-contrib; mil is in plain OpenCV")
    parser.add_argument("--sets", nargs="+", default=["store"],
                        help="RIS sets for vidmine-eval ris --sets; add e.g. "
                             "pascal3d-instance:DIR for instance invariance")
    parser.add_argument("--deadline-min", type=float, default=None,
                        help="start no new stage after this many minutes (run again to go on)")
    parser.add_argument("--in-process", action="store_true",
                        help="call the CLIs' main() here instead of in fresh processes "
                             "(saves ~7 s of imports per call: for smoke checks)")
    for key in OVERRIDABLE:
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None,
                            help="override the preset")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        out = run_study(args)
    except OutOfTime as stage:
        print(f"study: deadline reached before stage {stage}; run the same command again "
              "to continue", file=sys.stderr)
        return 3
    print(f"study: results in {out / 'results.md'} and {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
