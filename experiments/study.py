"""Do pairs mined from video teach invariances that plain instance discrimination does not?
One command renders a fixed set of videos of 3D solids, mines them, builds the graph (with
the paper's bootstrap, when an arm reads the graph), trains one backbone under four arms
with one budget and three seeds, and measures every network beside floors that learn
nothing, on invariance sets rendered from held-out objects that no training video contains:

    python experiments/study.py --scale cpu --seeds 0 1 2          # the study, 2 CPU cores
    python experiments/study.py --scale gpu --seeds 0 1 2          # larger, when a GPU is lent
    python experiments/study.py --scale toy --seeds 0              # smoke check of the plumbing

Arms (same backbone, steps, batch, image size, learning rate):
    moco-none           MoCo v2, two augmentations of one crop (instance discrimination)
    moco-tracker        MoCo v2, two crops of one track 5-150 frames apart (Region Tracker)
    moco-transitive     MoCo v2, transitive pairs (intra + inter variation at once)
    triplet-transitive  triplet ranking loss on transitive pairs (Wang, He, Gupta 2017)
Ablation arms, run only when named in --arms: moco-tracker-transitive and
triplet-intra-transitive (intra-instance and transitive positives half and half),
triplet-tracker-transitive-nocolour (the same with every tracked crop pair for intra),
moco-tracker-far-nocolour (tracker pairs at least 15 frames apart), triplet-intra-nocolour
and triplet-inter-nocolour (one edge type alone, the 2017 paper's comparison),
moco-intra-nocolour and triplet-tracker-nocolour (the other objective on those pairs), *-nocolour arms
trained without colour jitter and grayscale, and *-othervideos / *-othertracks /
*-otherclusters arms whose MoCo negatives come from other videos / other tracks / other
tracks and graph clusters only, and *-fromnone arms that start from the same seed's
moco-none-nocolour network (docs/study.md, "Ablation").
Floors: an untrained network (one per seed), a colour histogram, raw 8x8 pixels and the
hand-crafted descriptor.

Every stage leaves its result under --out and is skipped when run again, so a run cut short
(by --deadline-min or a lost machine) continues where it stopped with the same command.
Results: <out>/results.md, <out>/results.json and <out>/ris_top10.png. docs/study.md has
the protocol and the published results.
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
import signal
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
# Ablation arms (run only when named in --arms): intra-instance and transitive positives
# mixed half and half, as the 2017 paper trained on both kinds of edge at once; and arms
# trained without MoCo v2's colour jitter and grayscale, which train colour away.
ABLATION_ARMS = {
    "moco-tracker-transitive": ("moco", "tracker:1,transitive:1"),
    "triplet-intra-transitive": ("triplet", "intra:1,transitive:1"),
    "moco-none-nocolour": ("moco", "none:1"),
    "moco-tracker-nocolour": ("moco", "tracker:1"),
    "moco-transitive-nocolour": ("moco", "transitive:1"),
    "triplet-transitive-nocolour": ("triplet", "transitive:1"),
    "triplet-intra-transitive-nocolour": ("triplet", "intra:1,transitive:1"),
    "moco-tracker-transitive-nocolour": ("moco", "tracker:1,transitive:1"),
    # each edge type of the graph alone, against the mix above (the 2017 paper's comparison:
    # transitive pairs against intra-instance or inter-instance edges alone)
    "triplet-intra-nocolour": ("triplet", "intra:1"),
    "triplet-inter-nocolour": ("triplet", "inter:1"),
    # which of objective and pairs makes the intra arm: MoCo on the same intra pairs, and the
    # triplet loss on tracker pairs (every crop pair of a track 5-150 frames apart)
    "moco-intra-nocolour": ("moco", "intra:1"),
    "triplet-tracker-nocolour": ("triplet", "tracker:1"),
    # MoCo's own positive (another augmentation of the crop) for half the batch, transitive
    # pairs for the other half: the 2017 paper's mix with instance discrimination as the
    # intra-instance edge
    "moco-none-transitive-nocolour": ("moco", "none:1,transitive:1"),
    # intra pairs are one per track (its two graph nodes); tracker pairs are every crop pair
    # of a track 5-150 frames apart, ~18x as many and as wide in viewpoint
    "triplet-tracker-transitive-nocolour": ("triplet", "tracker:1,transitive:1"),
    # tracker pairs at least 15 frames apart: the object has turned by 47 degrees (median)
    # instead of 23, about one azimuth step of the viewpoint set, from a fifth of the tracks
    "moco-tracker-far-nocolour": ("moco", "tracker:1"),
    # negatives from other videos only: no queued key of the pair's own video, so a crop's own
    # object under another view is never pushed away (training option --queue-exclude video)
    "moco-none-nocolour-othervideos": ("moco", "none:1"),
    "moco-tracker-nocolour-othervideos": ("moco", "tracker:1"),
    # negatives from other tracks only: the pair's own track is never a negative, but the other
    # objects of its video (on the same background) still are (--queue-exclude track)
    "moco-none-nocolour-othertracks": ("moco", "none:1"),
    "moco-tracker-nocolour-othertracks": ("moco", "tracker:1"),
    # negatives that are neither of the pair's tracks nor of its graph clusters, those the
    # triplet loss forbids (--queue-exclude cluster): a transitive positive is another member
    # of the query's cluster, which plain MoCo's queue otherwise pushes away
    "moco-transitive-nocolour-othertracks": ("moco", "transitive:1"),
    "moco-transitive-nocolour-otherclusters": ("moco", "transitive:1"),
    "moco-none-nocolour-otherclusters": ("moco", "none:1"),
    # InfoNCE at a higher temperature (MoCo v2's is 0.2): a softer loss tolerates positives
    # that are only alike (Wang & Liu 2021, the uniformity-tolerance dilemma), as a transitive
    # positive, another object, is
    "moco-none-nocolour-temp05": ("moco", "none:1"),
    "moco-transitive-nocolour-temp05": ("moco", "transitive:1"),
    "moco-none-nocolour-temp1": ("moco", "none:1"),
    "moco-transitive-nocolour-temp1": ("moco", "transitive:1"),
    # the same at 2.5x the learning rate: InfoNCE's gradient scales with 1/temperature
    "moco-none-nocolour-temp05-lr": ("moco", "none:1"),
    "moco-transitive-nocolour-temp05-lr": ("moco", "transitive:1"),
    # a second round that starts from the same seed's plain MoCo network (START_FROM): whether
    # transitive pairs teach a network that already tells instances apart what they cannot
    # teach one from scratch; its control is plain MoCo continued the same way
    "moco-none-nocolour-fromnone": ("moco", "none:1"),
    "moco-transitive-nocolour-fromnone": ("moco", "transitive:1"),
    # the queue plain MoCo gets: a transitive arm's pairs hold ~5,600 distinct crops against
    # plain MoCo's 18,712, so moco_schedule fits it a queue of 512 keys instead of 2,048
    "moco-transitive-nocolour-queue2048": ("moco", "transitive:1"),
    # gentler crops (at least half the image instead of a fifth): a tracker pair has turned
    # and a transitive pair is two objects already, so small crops on top leave the views
    # little in common (tracker pairs gain from it, as much as plain MoCo; transitive do not)
    "moco-none-nocolour-crop05": ("moco", "none:1"),
    "moco-tracker-nocolour-crop05": ("moco", "tracker:1"),
    "moco-transitive-nocolour-crop05": ("moco", "transitive:1"),
}
ALL_ARMS = {**ARMS, **ABLATION_ARMS}
# Training flags of an arm. ARM_FLAGS change the recipe, so an arm's plain-MoCo baseline is
# the one with the same ARM_FLAGS; PAIR_FLAGS only choose which pairs of a source it uses.
RECIPE_SUFFIXES = {"-nocolour": ("--no-colour-augment",), "-othervideos": ("--queue-exclude", "video"),
                   "-othertracks": ("--queue-exclude", "track"),
                   "-otherclusters": ("--queue-exclude", "cluster"),
                   "-temp05": ("--temperature", "0.5"), "-temp1": ("--temperature", "1.0"),
                   "-lr": ("--lr", "0.75"), "-queue2048": ("--moco-queue", "2048"),
                   "-crop05": ("--crop-scale", "0.5")}
ARM_FLAGS = {arm: flags for arm in ABLATION_ARMS
             if (flags := sum((f for s, f in RECIPE_SUFFIXES.items() if s in arm), ()))}
PAIR_FLAGS = {"moco-tracker-far-nocolour": ("--min-gap", "15")}
# Arms whose trunk starts from another arm's final network of the same seed (--init; the heads,
# queue and learning-rate schedule start afresh), which has to be trained first.
START_FROM = {"moco-none-nocolour-fromnone": "moco-none-nocolour",
              "moco-transitive-nocolour-fromnone": "moco-none-nocolour"}
FLOOR_NAMES = ("untrained resnet18", "colour-histogram (floor)", "raw-pixels (floor)",
               "handcrafted (floor)")
PRESETS = {
    # A smoke check of the plumbing: says nothing about the claim.
    "toy": dict(synth_train=4, train_objects=300, objects_per_category=3, steps=4,
                bootstrap_steps=4, batch_size=8, image_size=32, lr=0.3, warmup_steps=0, workers=0,
                mine_workers=2, eval_batch=64, cpu_augment="batched"),
    # 2 CPU cores, <= 150 min in all (docs/study.md: how the budget was measured and chosen).
    "cpu": dict(synth_train=200, train_objects=300, objects_per_category=8, steps=500,
                bootstrap_steps=300, batch_size=64, image_size=32, lr=0.3, warmup_steps=30, workers=1,
                mine_workers=2, eval_batch=256, cpu_augment="batched"),
    # One H100: more data, longer runs, larger images (not yet measured).
    "gpu": dict(synth_train=1600, train_objects=300, objects_per_category=12, steps=4000,
                bootstrap_steps=1000, batch_size=256, image_size=64, lr=0.3, warmup_steps=100, workers=8,
                mine_workers=min(14, os.cpu_count() or 1), eval_batch=512, cpu_augment="v2"),
}
# Longer tracks, every sampled frame kept, 12 fps: ~3x the crops of the defaults per video.
MINING = ["--sample-fps", "12", "--track-span", "60", "--crop-stride", "1", "--stable-s", "0",
          "--sheet", "none"]
KEEP_IF_COLOUR_AT_MOST = 60.0   # a set is kept for claims when the colour histogram scores <= this


def reads_graph(arm: str) -> bool:
    """Whether an arm's training reads the graph: pairs of the pairs table, or (the triplet
    loss's forbidden negatives) the crops' clusters. Tracker and plain pairs come from the
    crops alone."""
    from vidmine.training.config import PAIR_SOURCES, parse_positives

    objective, positives = ALL_ARMS[arm]
    return objective == "triplet" or any(s in PAIR_SOURCES for s in parse_positives(positives))


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

    def synth(self, folder: Path, n: int, objects: int, base_seed: int, parallel: int,
              options: list[str] = ()) -> None:
        """``n`` synthetic videos of solids drawn from ``objects`` training instances, from up
        to ``parallel`` generator calls with distinct seeds (one generator call is one process),
        each with the synth ``options``."""
        chunks = [c for c in np.array_split(np.arange(n), max(1, min(parallel, n))) if len(c)]
        specs = [["synth", str(folder), "--videos", str(len(c)), "--seed", str(base_seed + i),
                  "--kind", "solids", "--pool", "train",
                  "--pool-size", str(objects), *options] for i, c in enumerate(chunks)]
        if self.in_process:
            for argv in specs:
                self("vidmine-mine", *argv)
            return
        with self.log.open("a") as err:
            procs = [subprocess.Popen(self.command("vidmine-mine", argv), stdout=subprocess.DEVNULL,
                                      stderr=err, cwd=ROOT) for argv in specs]
            try:
                if any([proc.wait() != 0 for proc in procs]):  # wait for every one of them
                    raise SystemExit(f"study: vidmine-mine synth failed; see {self.log}")
            finally:  # a study stopped (SIGTERM, Ctrl-C) leaves no generator behind
                for proc in procs:
                    proc.kill()


class Stages:
    """Each stage's result is a JSON file in <out>/state: done once, then read back."""

    def __init__(self, out: Path, deadline_s: float | None):
        self.dir = out / "state"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.t0, self.deadline_s = time.perf_counter(), deadline_s
        self.ran = 0   # stages this invocation ran (results are rewritten only after some)

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def done(self, name: str) -> bool:
        return self.path(name).is_file()

    def run(self, name: str, fn) -> dict:
        path = self.path(name)
        if path.is_file():
            return json.loads(path.read_text())
        if self.deadline_s is not None and time.perf_counter() - self.t0 > self.deadline_s:
            raise OutOfTime(name)
        print(f"study: {name} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        result = fn()
        result["wall_s"] = round(time.perf_counter() - t, 1)
        path.write_text(json.dumps(result, indent=2))
        self.ran += 1
        return result


# -- data ------------------------------------------------------------------------------------

def prepare_data(cli: Cli, out: Path, p: dict, category_look: bool = False) -> dict:
    """Training videos of solids from the train pool, and the invariance sets rendered from
    held-out solids (the other pool: no training video contains them); with
    ``category_look`` the objects of a category share a material in both."""
    photos = ROOT.parent / "shared" / "data" / "images"
    videos = out / "videos"
    shutil.rmtree(videos, ignore_errors=True)
    videos.mkdir(parents=True)
    look = ["--category-look"] if category_look else []
    cli.synth(videos, p["synth_train"], p["train_objects"], 100, p["mine_workers"], look)
    manifest = cli("vidmine-mine", "synth-sets", out / "sets", "--objects-per-category",
                   p["objects_per_category"], *look, "--json")
    # textures are cut from these photos when they exist (procedural patterns otherwise)
    return {"texture_photos": len(list(photos.glob("*.jpg"))), "videos": p["synth_train"],
            "train_objects": p["train_objects"], "category_look": category_look,
            "environment": environment(),
            "sets": manifest["kinds"], "retrieval": manifest["retrieval"]}


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
    # No val split: the held-out objects are the rendered sets.
    cli("vidmine-graph", "build", "--workdir", work, "--val-fraction", 0,
        *(["--rebuild"] if model else []), *net, "--json")
    stats = cli("vidmine-graph", "stats", "--workdir", work, "--json")
    sources = cli("vidmine-train", "sources", "--workdir", work, "--json")
    return {"edges": stats.get("edges"), "pairs": sources["pairs"],
            "clustered_crops": sources["clustered_crops"],
            "pair_quality": stats.get("pair_quality")}


def train(cli: Cli, work: Path, run_dir: Path, objective: str, positives: str, steps: int,
          seed: int, p: dict, flags: tuple[str, ...] = ()) -> dict:
    # The arm's flags come last, so that they override the preset's (the last flag wins).
    args = ["train", "--workdir", work, "--out", run_dir, "--objective", objective,
            "--positives", positives, "--backbone", "resnet18", "--steps", steps,
            "--batch-size", p["batch_size"], "--image-size", p["image_size"], "--lr", p["lr"],
            "--warmup-steps", p["warmup_steps"], "--workers", p["workers"], "--seed", seed,
            "--cpu-augment", p["cpu_augment"],
            "--checkpoint-every", 250, "--json", *flags]
    if (run_dir / "last.pt").is_file():
        args.append("--resume")  # a run cut short continues its own schedule
    summary = cli("vidmine-train", *args)
    if summary.get("status") != "done":
        raise SystemExit(f"study: training {run_dir.name} ended {summary.get('status')}")
    losses = [row.split(",")[1] for row in (run_dir / "log.csv").read_text().splitlines()[1:]]
    return {"checkpoint": str(run_dir / "final.pt"), "device": summary["device"],
            "precision": summary.get("precision", "fp32"),
            "pairs_per_s": round(summary["pairs_per_s"], 1), "pairs": summary["pairs"],
            "moco": summary.get("moco"), "final_loss": float(losses[-1]) if losses else None}


def evaluate(cli: Cli, kind: str, sets: Path, checkpoints: list[str], out: Path, p: dict,
             seed: int | None) -> dict:
    """RIS or retrieval on the rendered sets: the checkpoints and an untrained network of
    init ``seed``, or, with ``seed`` None, the descriptor floors alone."""
    args = [kind, "--workdir", out / "work", "--size", p["image_size"], "--batch-size",
            p["eval_batch"], "--out", out, "--json"]
    args += ["--sets", f"rendered:{sets}"] if kind == "ris" else ["--data", sets]
    args += ["--no-untrained"] if seed is None else ["--untrained", "--seed", seed, "--floors", ""]
    for ckpt in checkpoints:
        args += ["--checkpoint", ckpt]
    return cli("vidmine-eval", *args)


def objective_of(stage: str) -> str:
    """The objective a training stage trained ("train-bootstrap" or "train-<arm>-s<seed>")."""
    return "triplet" if stage == "train-bootstrap" else ALL_ARMS[stage[6:].rsplit("-s", 1)[0]][0]


def time_left_line(state_dir: Path, todo: list[str], p: dict,
                   minutes_to_deadline: float | None) -> str | None:
    """What the trainings still to run will take at the speed this folder's trainings ran
    (an objective's own speed where measured, else the slowest): a CPU without bf16 trains
    ~5x slower than one with AMX, so the same command may need several runs."""
    rates: dict[str, float] = {}
    for path in sorted(state_dir.glob("train-*.json"), key=lambda f: f.stat().st_mtime):
        with contextlib.suppress(KeyError):  # a stage of an arm this version no longer has
            if (rate := json.loads(path.read_text()).get("pairs_per_s") or 0) > 0:
                rates[objective_of(path.stem)] = rate
    if not rates or not todo:
        return None
    pairs = p["steps"] * p["batch_size"]
    minutes = sum(pairs / rates.get(objective, min(rates.values())) for objective in todo) / 60
    speeds = ", ".join(f"{o} {r:.0f}" for o, r in sorted(rates.items()))
    line = (f"study: {len(todo)} trainings left, about {minutes:.0f} min at the pairs/s this "
            f"machine trained at so far ({speeds})")
    if minutes_to_deadline is not None and minutes > minutes_to_deadline:
        line += (f"; the deadline comes in {max(0.0, minutes_to_deadline):.0f} min: run the same "
                 "command again to go on")
    return line


def print_time_left(stages: Stages, trainings: list[tuple[int, str]], p: dict) -> None:
    todo = [ALL_ARMS[arm][0] for seed, arm in trainings if not stages.done(f"train-{arm}-s{seed}")]
    to_deadline = None if stages.deadline_s is None else (
        stages.deadline_s - (time.perf_counter() - stages.t0)) / 60
    if line := time_left_line(stages.dir, todo, p, to_deadline):
        print(line, file=sys.stderr, flush=True)


ALIKE_CHOICES = 5   # --alike-transitive draws among the crops this many most alike the anchor

# The ground-truth rewrites of transitive positives, each an option and a stage of its own
# (one at most): the positive they give, what the arms then learn, and the rewrite of a work
# directory.
ORACLES = {
    "oracle-transitive": ("a crop of another instance of the anchor's category",
                          "pairs a perfect clustering would make",
                          lambda work: oracle_transitive(work, "category")),
    "oracle-instance": ("another crop of the anchor's own instance, from any video",
                        "object identity across videos",
                        lambda work: oracle_transitive(work, "instance")),
    "random-transitive": ("a crop of another instance of any category, drawn at random",
                          "pairs a clustering at chance would make (the control for the mined ones)",
                          lambda work: oracle_transitive(work, "any")),
    "alike-transitive": (f"one of the {ALIKE_CHOICES} crops of other instances most alike the "
                         "anchor in colour histogram",
                         "positives chosen by likeness alone, blind to category",
                         lambda work: alike_transitive(work)),
}


def known_truth(store):
    """The rendered ground truth of the store's crops; a clear stop where none is found, e.g.
    when the videos were moved after mining (their paths in the index no longer lead to the
    truth files beside them)."""
    from vidmine.graph.quality import crop_labels

    truth = crop_labels(store)
    if not (truth.category >= 0).any():
        raise SystemExit("study: no crop has rendered ground truth: the oracle ablations need "
                         "the videos' .truth.json files where the index says the videos are")
    return truth


def oracle_transitive(work: Path, same: str = "category", seed: int = 0) -> dict:
    """Ablations on the rendered ground truth: every transitive pair keeps its anchor and gets
    as positive a crop drawn from the anchor's ``same`` group. ``category`` (--oracle-transitive):
    another instance of its category, as a perfect clustering would pair them. ``instance``
    (--oracle-instance): another crop of its own instance from any video that shows it, the
    identity a perfect tracker across videos would give. ``any`` (--random-transitive): a crop
    of another instance of any category, the pairs of a clustering at chance. Rewrites the
    pairs of this study's own store (its --out); nothing else reads them."""
    from vidmine.storage.store import StorageConfig, Store

    rng = np.random.default_rng(seed)
    with Store(StorageConfig(workdir=str(work)), create=False) as store:
        truth = known_truth(store)
        ids, instance, category = truth.ids, truth.instance, truth.category
        pair_id, anchor = transitive_anchors(store, ids)
        # Crops grouped by the label; a positive is redrawn until it is another instance
        # (category, any) or another crop (instance).
        group = {"category": category, "instance": instance,
                 "any": np.where(category >= 0, 0, -1)}[same]
        other = np.arange(len(ids)) if same == "instance" else instance
        known = np.flatnonzero(group >= 0)
        by_label = {c: known[group[known] == c] for c in np.unique(group[known])}
        positive = np.full(len(anchor), -1, np.int64)
        for c, members in by_label.items():
            todo = np.flatnonzero((anchor >= 0) & (group[np.maximum(anchor, 0)] == c))
            for _ in range(20):   # a handful of redraws settle every pair
                if not len(todo) or len(members) < 2:
                    break
                draw = members[rng.integers(0, len(members), len(todo))]
                ok = other[draw] != other[anchor[todo]]
                positive[todo[ok]] = draw[ok]
                todo = todo[~ok]
        return rewrite_positives(store, pair_id, ids, positive)


def transitive_anchors(store, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the store's transitive pairs and their anchors' rows in ``ids`` (-1: none)."""
    from sqlalchemy import select

    from vidmine.arrays import lookup_sorted
    from vidmine.storage.schema import pairs

    with store.index.read() as conn:
        rows = conn.execute(select(pairs.c.id, pairs.c.anchor).where(
            pairs.c.kind == "transitive")).all()
    return (np.array([r[0] for r in rows], np.int64),
            lookup_sorted(ids, np.array([r[1] for r in rows], np.int64)))


def rewrite_positives(store, pair_id: np.ndarray, ids: np.ndarray, positive: np.ndarray) -> dict:
    """Each pair's positive becomes crop ``ids[positive]``; pairs without one (-1) go."""
    from sqlalchemy import bindparam, update

    from vidmine.storage.schema import pairs

    keep = positive >= 0
    with store.index.write() as conn:
        stmt = (update(pairs).where(pairs.c.id == bindparam("_id"))
                .values(positive=bindparam("_positive")))
        conn.execute(stmt, [{"_id": int(i), "_positive": int(ids[j])}
                            for i, j in zip(pair_id[keep], positive[keep])])
        dropped = pair_id[~keep]
        if len(dropped):   # anchors without ground truth: no such positive exists
            conn.execute(pairs.delete().where(pairs.c.id.in_(dropped.tolist())))
    return {"rewritten": int(keep.sum()), "dropped": int((~keep).sum())}


def alike_transitive(work: Path, seed: int = 0) -> dict:
    """--alike-transitive: every transitive pair keeps its anchor and gets as positive one of
    the ALIKE_CHOICES crops of other instances most alike it in colour histogram (cosine),
    drawn at random: positives chosen by likeness alone, blind to category."""
    from vidmine.descriptors import colour_histogram, l2_normalize
    from vidmine.storage.store import StorageConfig, Store

    rng = np.random.default_rng(seed)
    with Store(StorageConfig(workdir=str(work)), create=False) as store:
        truth = known_truth(store)
        pair_id, anchor = transitive_anchors(store, truth.ids)
        known = np.flatnonzero(truth.category >= 0)
        images = store.load_crops(truth.ids[known], job="alike-transitive")
        known = known[np.isin(truth.ids[known], np.fromiter(images, np.int64))]
        hist = l2_normalize(colour_histogram([images[int(i)] for i in truth.ids[known]]))
        row_of = np.full(len(truth.ids), -1)
        row_of[known] = np.arange(len(known))
        positive = np.full(len(anchor), -1, np.int64)
        todo = np.flatnonzero((anchor >= 0) & (row_of[np.maximum(anchor, 0)] >= 0))
        choices = min(ALIKE_CHOICES, len(known) - 1)
        for part in np.array_split(todo, max(1, len(todo) // 1024)) if choices > 0 else []:
            sim = hist[row_of[anchor[part]]] @ hist.T   # parts of 1,024 anchors bound the memory
            sim[truth.instance[anchor[part]][:, None] == truth.instance[known][None, :]] = -np.inf
            top = np.argpartition(-sim, choices - 1, axis=1)[:, :choices]
            pick = top[np.arange(len(part)), rng.integers(0, choices, len(part))]
            other = np.isfinite(sim[np.arange(len(part)), pick])   # never the anchor's instance
            positive[part[other]] = known[pick[other]]
        return rewrite_positives(store, pair_id, truth.ids, positive)


def oracle_clusters(work: Path) -> dict:
    """With --oracle-transitive, the graph's clusters as a perfect clustering would make them
    too: every object crop with ground truth in its category's cluster, every other crop in
    none. Training reads them for the negatives it leaves out (the triplet loss always,
    MoCo with --queue-exclude cluster). Replaces the clusters of this study's own store."""
    from sqlalchemy import func, select

    from vidmine.storage.schema import clusters
    from vidmine.storage.store import StorageConfig, Store

    with Store(StorageConfig(workdir=str(work)), create=False) as store:
        truth = known_truth(store)
        known = truth.category >= 0
        with store.index.write() as conn:
            run = conn.execute(select(func.max(clusters.c.run_id))).scalar()
            if run is None:
                raise SystemExit("study: --oracle-clusters needs a built graph")
            conn.execute(clusters.delete())
            conn.execute(clusters.insert(), [
                {"run_id": run, "crop_id": int(i), "coarse": int(c), "fine": int(c)}
                for i, c in zip(truth.ids[known], truth.category[known])])
    return {"clustered": int(known.sum()), "categories": len(np.unique(truth.category[known]))}


# -- results ---------------------------------------------------------------------------------

TRAINED_MODEL = re.compile(r"(.+)-s(\d+)/final")   # a trained arm's checkpoint: <arm>-s<seed>/final


def arm_of(model: str) -> str:
    """'moco-none-s2/final' -> 'moco-none'; floors keep their names."""
    m = TRAINED_MODEL.fullmatch(model)
    return m.group(1) if m else model


def seed_of(model: str) -> int | None:
    """'moco-none-s2/final' -> 2; None for floors (the untrained network's rows carry theirs)."""
    m = TRAINED_MODEL.fullmatch(model)
    return int(m.group(2)) if m else None


def stats(values: list[float]) -> tuple[float, float | None]:
    v = np.asarray(values, float)
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else None)


def cell(values: list[float], scale: float = 1.0) -> str:
    mean, sd = stats([x * scale for x in values])
    return f"{mean:.1f}" if sd is None else f"{mean:.1f} ± {sd:.1f}"


def collect(ris: list[dict], retrieval: list[dict]) -> dict[str, dict[str, list[float]]]:
    """arm or floor -> measure -> values over seeds ('viewpoint (rendered) top10', 'mAP')."""
    values: dict[str, dict[str, list[float]]] = {}
    for r in ris:
        for k in ("top10", "top25"):
            values.setdefault(arm_of(r["model"]), {}).setdefault(
                f"{r['invariance']} {k}", []).append(r[k])
    for r in retrieval:
        for m in ("recall@1", "mAP"):
            values.setdefault(arm_of(r["model"]), {}).setdefault(m, []).append(r[m])
    return values


def claims(values: dict, sets: list[str], arms: list[str]) -> list[str]:
    """The papers' directions checked on the numbers, each with its evidence."""
    def mean(row, col):
        return stats(values[row][col])[0] if col in values.get(row, {}) else float("nan")

    def beats(a, b, col) -> bool:
        (ma, sa), (mb, sb) = stats(values[a][col]), stats(values[b][col])
        return ma - mb > 2 * max(sa or 0.0, sb or 0.0)

    lines = []
    for inv in sets:
        colour = mean("colour-histogram (floor)", f"{inv} top10")
        kept = colour <= KEEP_IF_COLOUR_AT_MOST
        lines.append(f"- **{inv}**: colour histogram {colour:.1f} Top-10 "
                     f"({'kept' if kept else 'not kept'}: the criterion is <= "
                     f"{KEEP_IF_COLOUR_AT_MOST:.0f}).")
        # Both of the paper's K: few units per class (10) favour a descriptor with a handful
        # of object-specific bins; 25 asks for invariance spread over more units.
        for k in ("top10", "top25"):
            col = f"{inv} {k}"
            floors = [f for f in FLOOR_NAMES if col in values.get(f, {})]
            for arm in (a for a in arms if floors and col in values.get(a, {})):
                said = f"  - Top-{k[3:]}: {arm} above every floor by more than 2 sd: "
                if stats(values[arm][col])[1] is None:  # one seed: no sd to judge a margin by
                    margin = min(mean(arm, col) - mean(f, col) for f in floors)
                    lines.append(said + f"untested (one seed; lowest margin {margin:+.1f})")
                    continue
                lost = [f for f in floors if not beats(arm, f, col)]
                lines.append(said + ("yes" if not lost else
                                     "no (not above " + ", ".join(lost) + ")"))

    def baseline(arm: str) -> str | None:
        """Plain MoCo trained the same way as ``arm`` (the same extra training flags), or None
        where no arm is."""
        return next((a for a, spec in ALL_ARMS.items()
                     if spec == ("moco", "none:1") and ARM_FLAGS.get(a) == ARM_FLAGS.get(arm)
                     and START_FROM.get(a) == START_FROM.get(arm)), None)

    for inv, direction in (("viewpoint (rendered)", "above"), ("instance (rendered)", "above"),
                           ("occlusion (rendered)", "level")):
        col = f"{inv} top10"
        for arm in arms:
            base = baseline(arm)
            if arm == base or col not in values.get(base, {}) or col not in values.get(arm, {}):
                continue
            diff = mean(arm, col) - mean(base, col)
            # The same margin as the floors': more than 2 sd of the noisier of the two arms.
            one_seed = None in (stats(values[arm][col])[1], stats(values[base][col])[1])
            above = beats(arm, base, col) if not one_seed else None
            if direction == "above":
                want = f"above {base} by more than 2 sd"
                verdict = ("untested (one seed)" if one_seed else "yes" if above else
                           "no, but in that direction" if diff > 0 else "no")
            else:
                want = f"not above {base} by more than 2 sd"
                verdict = "untested (one seed)" if one_seed else "no" if above else "yes"
            lines.append(f"- {inv}: {arm} {want}: {verdict} ({diff:+.1f})")
    return lines


def environment() -> dict:
    """What the rendered and mined data depend on beyond the code and the command: the CPU
    and the builds that render, encode, decode and track (docs/study.md, Protocol 6)."""
    import av
    import cv2
    cpu, flags = platform.processor() or platform.machine(), []
    with contextlib.suppress(OSError):
        info = Path("/proc/cpuinfo").read_text()
        if m := re.search(r"^model name\s*:\s*(.+)$", info, re.M):
            cpu = m.group(1).strip()
        if m := re.search(r"^flags\s*:\s*(.+)$", info, re.M):
            flags = m.group(1).split()
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    return {"cpu": cpu, "simd": simd, "av": av.__version__,
            "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "opencv": cv2.__version__, "numpy": np.__version__}


def environment_line(env: dict) -> str:
    simd = f" ({env['simd']})" if env.get("simd") else ""
    return (f"{env['cpu']}{simd}, PyAV {env['av']} (libavcodec {env['libavcodec']}), "
            f"OpenCV {env['opencv']}, numpy {env['numpy']}")


def device_name() -> str:
    import torch
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    return (f"CPU only, {platform.machine()}, {os.cpu_count()} cores "
            f"(torch {torch.__version__})")


def git_commit() -> str:
    """HEAD of the checkout the study runs from, '+dirty' when it has uncommitted changes
    (each stage runs the checkout's code as it is then: run a study from a checkout that
    nobody edits)."""
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], capture_output=True, text=True,
                              cwd=ROOT).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def commits(out: Path) -> list[str]:
    """Every commit the study ran stages at, in order (a resumed study may span several)."""
    path = out / "state" / "commits.txt"
    seen = path.read_text().split() if path.is_file() else []
    if git_commit() not in seen:
        seen.append(git_commit())
        path.write_text("\n".join(seen) + "\n")
    return seen


def pairs_line(state: dict) -> str:
    stage = "graph-bootstrap" if "graph-bootstrap" in state else "graph-handcrafted"
    when = ("after the bootstrap" if stage == "graph-bootstrap" else
            "of the hand-crafted graph (no arm here reads the graph: no bootstrap needed)")
    return (f"Pairs per source {when}: "
            + ", ".join(f"{k} {v}" for k, v in state[stage]["pairs"].items()) + ".")


GRAPH_STAGES = {"graph-handcrafted": "hand-crafted descriptor", "graph-bootstrap": "bootstrap network"}
QUALITY_COLUMNS = ("intra_pairs_one_instance", "inter_edges_one_category",
                   "inter_edges_one_instance", "transitive_pairs_one_category")


def graph_quality(stages: dict) -> dict:
    """{graph stage: its pair quality} of one study's stages."""
    return {stage: stages[stage].get("pair_quality") or {} for stage in GRAPH_STAGES
            if stage in stages}


def pair_quality_rows(state: dict, parts: list[dict]) -> list[tuple[str, dict]]:
    """(graph, quality) for each graph the table's networks trained on. A merged table's parts
    each built their own graph (from a little other data with --other-data, or after a
    bootstrap in bf16 instead of fp32), so a part whose graph scored otherwise than every
    earlier part's gets its own row, named by its place in the list of parts."""
    rows, seen = [], {stage: [] for stage in GRAPH_STAGES}
    graphs = [p.get("pair_quality", {}) for p in parts] or [graph_quality(state)]
    for number, graph in enumerate(graphs, 1):
        for stage, label in GRAPH_STAGES.items():
            if stage in graph and graph[stage] not in seen[stage]:
                seen[stage].append(graph[stage])
                rows.append((label + (f" (part {number})" if number > 1 else ""), graph[stage]))
    return rows


def write_results(out: Path, args, p: dict, state: dict, ris: list[dict],
                  retrieval: list[dict], made: dict) -> None:
    """results.md, results.json and the chart. ``made``: the command, the commits its stages
    ran at, the device and the settings (and, for a merged study, its parts)."""
    from vidmine.evaluation.report import bar_chart
    values = collect(ris, retrieval)
    sets = list(dict.fromkeys(r["invariance"] for r in ris))
    held: dict[str, set[int]] = {}
    for r in ris:
        if (seed := seed_of(r["model"])) is not None:
            held.setdefault(arm_of(r["model"]), set()).add(seed)
    seeds = sorted(set().union(*held.values()))
    rows = [a for a in args.arms if a in values] + [f for f in FLOOR_NAMES if f in values]

    def row_name(row: str) -> str:
        """A row over fewer seeds than the table (a merged study's arm) says which."""
        mine = sorted(held.get(row, seeds))
        return row if mine == seeds else f"{row} (seed{'s' * (len(mine) > 1)} {' '.join(map(str, mine))})"
    md = [f"# vidmine study ({args.scale} preset)", ""]
    if args.scale == "toy":
        md += ["**Smoke check of the plumbing: these numbers say nothing about the claim.**", ""]
    mined = state["mine-train"]
    md += [f"Command: `{made['command']}` (commit {', then '.join(made['commits'])})", "",
           *(f"- part: `{part['command']}` (commit {', then '.join(part['commits'])}; "
             f"seeds {' '.join(map(str, part['seeds']))}"
             + (f"; {part['tracks']} tracks, {part['crops']} crops, rendered on "
                f"{part['rendered_on']}" if "tracks" in part else "") + ")"
             for part in made.get("parts", [])),
           *([""] if "parts" in made else []),
           f"Device: {made['device']}", "",
           f"Budget per arm: ResNet-18, {p['steps']} steps x {p['batch_size']} pairs at "
           f"{p['image_size']} px, lr {p['lr']}; bootstrap triplet network on intra pairs "
           f"{p['bootstrap_steps']} steps; seeds {' '.join(map(str, seeds))} (asked: "
           f"{' '.join(map(str, args.seeds))}); mining tracker {args.tracker}.", "",
           f"Training data: {state['data']['videos']} rendered videos of solids (train pool; "
           f"textures from {state['data']['texture_photos']} photos, 0: procedural only"
           + ("; objects of a category share a material" if state["data"].get("category_look")
              else "") + "): "
           f"{mined['videos']['done']} mined, {mined['tracks']} tracks, {mined['crops']} crops. "
           + pairs_line(state),
           *(["", f"Data rendered on: {environment_line(state['data']['environment'])}."]
             if "environment" in state["data"] else []),
           "", "Pair quality against the rendered ground truth (the share right of those scored; "
           "vidmine-graph stats):", "", "| graph | intra pairs on one instance | inter edges on one category "
           "| inter edges on one instance | transitive pairs on one category |",
           "| --- | --- | --- | --- | --- |"]
    # a share is None when none of its pairs could be scored (e.g. no transitive pair at toy size)
    md += [f"| {label} | " + " | ".join(f"{100 * q[k]['right']:.1f} % of {q[k]['scored']:,}"
                                        if q.get(k) and q[k]["right"] is not None else "-"
                                        for k in QUALITY_COLUMNS) + " |"
           for label, q in pair_quality_rows(state, made.get("parts", []))]
    for stage, (positive, meaning, _) in ORACLES.items():
        if stage in state:
            o = state[stage]
            md += ["", f"**Ablation `--{stage}`**: every transitive pair's positive was replaced "
                   f"by {positive}, by the rendered ground truth ({o['rewritten']} pairs; "
                   f"{o['dropped']} without one dropped): the transitive arms train on {meaning}."]
    if "oracle-clusters" in state:
        o = state["oracle-clusters"]
        md += ["", f"**Ablation `--oracle-clusters`**: the graph's clusters are the rendered "
               f"categories ({o['clustered']:,} crops in {o['categories']}), so the negatives "
               "training leaves out for a cluster are the anchor's category."]
    md += ["", "Evaluation: held-out rendered objects (none in any training video). Mean ± "
           "sample sd over seeds; floors that learn nothing are deterministic, but the "
           "untrained network has one initialisation per seed.", ""]
    for k in ("top10", "top25"):
        md += [f"Top-{k[3:]} RIS:", "", "| features | " + " | ".join(sets) + " |",
               "| --- " * (1 + len(sets)) + "|"]
        md += [f"| {row_name(a)} | " + " | ".join(cell(values[a].get(f"{s} {k}", [float('nan')]))
                                        for s in sets) + " |" for a in rows]
        md.append("")
    md += ["Object retrieval across renders (x100; relevant: the same held-out object in "
           "another render):", "", "| features | recall@1 | mAP |", "| --- | --- | --- |"]
    md += [f"| {row_name(a)} | {cell(values[a]['recall@1'], 100)} | {cell(values[a]['mAP'], 100)} |"
           for a in rows if "mAP" in values[a]]
    md += ["", "What the numbers say (computed):", "", *claims(values, sets, [
        a for a in args.arms if a in values]), ""]
    trained = {k: v for k, v in state.items() if k.startswith("train-")}
    md += ["Training throughput (pairs/s; precision): " + ", ".join(
               f"{k[6:]} {v['pairs_per_s']} ({v.get('precision', 'fp32')})"
               for k, v in trained.items()) + ".", "",
           "Wall time per stage (s): " + ", ".join(
               f"{k} {v['wall_s']}" for k, v in state.items() if "wall_s" in v) + ".",
           f"Total: {sum(v.get('wall_s', 0) for v in state.values()) / 60:.1f} min."]
    chart = {s: {a: stats(values[a][f"{s} top10"])[0] for a in rows if f"{s} top10" in values[a]}
             for s in sets}
    errors = {s: {a: stats(values[a][f"{s} top10"])[1] or 0.0 for a in rows
                  if f"{s} top10" in values[a]} for s in sets}
    bar_chart(chart, "Top-10 RIS on held-out rendered objects (mean ± sd over seeds)", "RIS",
              out / "ris_top10.png", errors=errors)
    (out / "results.md").write_text("\n".join(md) + "\n")
    (out / "results.json").write_text(json.dumps(
        {**made, "scale": args.scale, "preset": p, "seeds": seeds, "stages": state,
         "summary": {a: {m: {"mean": stats(v)[0], "sd": stats(v)[1], "values": v}
                         for m, v in cols.items()} for a, cols in values.items()},
         "ris": ris, "retrieval": retrieval}, indent=2))


# -- the study -------------------------------------------------------------------------------

OVERRIDABLE = ("synth_train", "train_objects", "objects_per_category", "steps",
               "bootstrap_steps", "batch_size", "image_size")


# What the stages' results depend on (not how many processes made them).
RESULT_SETTINGS = (*OVERRIDABLE, "lr", "warmup_steps", "cpu_augment")


# Settings a folder made before they existed was made with.
GROUND_TRUTH_OPTIONS = (*(stage.replace("-", "_") for stage in ORACLES), "oracle_clusters")
DATA_OPTIONS = ("category_look",)
SETTINGS_ADDED_LATER = {"train_objects": 300,
                        **dict.fromkeys((*GROUND_TRUTH_OPTIONS, *DATA_OPTIONS), False)}


def settings_changes(old: dict, new: dict) -> list[str]:
    """'steps 2 -> 3' for each setting of ``new`` that ``old`` has otherwise."""
    return [f"{k} {old.get(k)} -> {v}" for k, v in new.items() if old.get(k) != v]


def check_settings(out: Path, p: dict, args) -> dict:
    """Stages are found by name, so resuming a folder with other settings would silently reuse
    results made with the old ones: the first run's settings are kept and a change refused."""
    settings = {"scale": args.scale, "tracker": args.tracker,
                **{option: bool(getattr(args, option))
                   for option in (*GROUND_TRUTH_OPTIONS, *DATA_OPTIONS)},
                **{k: p[k] for k in RESULT_SETTINGS}}
    path = out / "state" / "settings.json"
    if not path.is_file():
        path.write_text(json.dumps(settings, indent=2))
        return settings
    saved = {**SETTINGS_ADDED_LATER, **json.loads(path.read_text())}
    changed = settings_changes(saved, settings)
    if changed:
        raise SystemExit(f"study: {out} holds a study with other settings ({'; '.join(changed)});"
                         " choose another --out")
    return settings


def run_study(args) -> Path:
    p = dict(PRESETS[args.scale])
    p.update({k: getattr(args, k) for k in OVERRIDABLE if getattr(args, k) is not None})
    out = Path(args.out or ROOT / "vidmine-data" / f"study-{args.scale}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    cli = Cli(out / "study.log", in_process=args.in_process)
    stages = Stages(out, None if args.deadline_min is None else args.deadline_min * 60)
    settings = check_settings(out, p, args)
    commits(out)
    work, sets = out / "work", out / "sets"

    state = {"data": stages.run("data", lambda: prepare_data(cli, out, p, args.category_look))}
    state["mine-train"] = stages.run("mine-train", lambda: mine(
        cli, out / "videos", work, p["mine_workers"], args.tracker))
    # The paper's bootstrap: a network trained on tracking (intra pairs) replaces the
    # hand-crafted descriptor for clustering, so inter edges and transitive pairs are its.
    # Only arms that read the graph need it; run later for such an arm, it leaves the other
    # arms' results as they were, since they never read the graph.
    state["graph-handcrafted"] = stages.run("graph-handcrafted", lambda: graph(cli, work, p))
    if any(reads_graph(arm) for arm in args.arms) or stages.done("graph-bootstrap"):
        boot = out / "runs" / "bootstrap-intra"
        state["train-bootstrap"] = stages.run("train-bootstrap", lambda: train(
            cli, work, boot, "triplet", "intra:1", p["bootstrap_steps"], 0, p))
        state["graph-bootstrap"] = stages.run("graph-bootstrap", lambda: graph(
            cli, work, p, model=str(boot / "final.pt")))
    for stage, (_, _, rewrite) in ORACLES.items():
        if getattr(args, stage.replace("-", "_")):
            state[stage] = stages.run(stage, lambda r=rewrite: r(work))
    if args.oracle_clusters:   # after --oracle-transitive's rewrite, which it goes with
        state["oracle-clusters"] = stages.run("oracle-clusters", lambda: oracle_clusters(work))
    ris, retrieval = [], []
    for kind, acc in (("ris", ris), ("retrieval", retrieval)):
        result = stages.run(f"floors-{kind}", lambda k=kind: evaluate(
            cli, k, sets, [], out / "eval" / f"floors-{k}", p, None))
        state[f"floors-{kind}"] = {"wall_s": result["wall_s"]}
        acc += result["results"]

    # Each seed is evaluated once its arms are trained, and the table rewritten, so a study
    # cut short still reports the seeds it finished.
    tag = "+".join(args.arms)
    trainings = [(seed, arm) for seed in args.seeds for arm in args.arms]
    # A table written afresh (none there when the run began) is rewritten after every seed,
    # so that it holds every seed asked for, not just the first.
    fresh_table = not (out / "results.md").is_file()
    for seed in args.seeds:
        checkpoints = []
        for arm in args.arms:
            objective, positives = ALL_ARMS[arm]
            flags = ARM_FLAGS.get(arm, ()) + PAIR_FLAGS.get(arm, ())
            key, run_dir = f"train-{arm}-s{seed}", out / "runs" / f"{arm}-s{seed}"
            if start := START_FROM.get(arm):
                if not stages.done(f"train-{start}-s{seed}"):
                    raise SystemExit(f"study: {arm} starts from the network of {start}: name "
                                     f"{start} before it in --arms")
                flags += ("--init", str(out / "runs" / f"{start}-s{seed}" / "final.pt"))
            if not stages.done(key):
                print_time_left(stages, trainings, p)
            state[key] = stages.run(key, lambda r=run_dir, o=objective, ps=positives, s=seed,
                                    f=flags: train(cli, work, r, o, ps, p["steps"], s, p, f))
            checkpoints.append(state[key]["checkpoint"])
        for kind, acc in (("ris", ris), ("retrieval", retrieval)):
            result = stages.run(f"eval-{kind}-{tag}-s{seed}", lambda k=kind, c=checkpoints, s=seed:
                                evaluate(cli, k, sets, c, out / "eval" / f"{k}-s{s}", p, s))
            state[f"eval-{kind}-s{seed}"] = {"wall_s": result["wall_s"]}
            acc += [{**r, "seed": seed} for r in result["results"]]  # the untrained net's too
        if stages.ran or fresh_table:
            made = {"command": shlex.join(["python", "experiments/study.py", *args.argv]),
                    "commits": commits(out), "device": device_name(), "settings": settings}
            write_results(out, args, p, state, ris, retrieval, made)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(PRESETS), default="toy")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=list(ALL_ARMS), default=list(ARMS))
    parser.add_argument("--out", help="output folder (default vidmine-data/study-<scale>)")
    parser.add_argument("--tracker", default="kcf",
                        help="mining tracker: kcf needs opencv-contrib; lk and mil are in plain OpenCV")
    parser.add_argument("--deadline-min", type=float, default=None,
                        help="start no new stage after this many minutes (run again to go on)")
    oracle = parser.add_mutually_exclusive_group()
    for stage, (positive, _, _) in ORACLES.items():
        oracle.add_argument(f"--{stage}", action="store_true", help=f"ablation: replace each "
                            f"transitive pair's positive by {positive} (rendered ground truth)")
    parser.add_argument("--oracle-clusters", action="store_true",
                        help="with --oracle-transitive: the graph's clusters become the rendered "
                             "categories too, so the negatives training leaves out (the triplet "
                             "loss's; MoCo's with --queue-exclude cluster) are the anchor's category")
    parser.add_argument("--category-look", action="store_true",
                        help="data: every object of a category wears the category's material "
                             "(own hues per face), in training videos and held-out sets alike, "
                             "so transitive pairs on one category can look alike")
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
    if args.oracle_clusters and not args.oracle_transitive:
        raise SystemExit("study: --oracle-clusters goes with --oracle-transitive")
    try:
        out = run_study(args)
    except OutOfTime as stage:
        print(f"study: deadline reached before stage {stage}; run the same command again "
              "to continue", file=sys.stderr)
        return 3
    print(f"study: results in {out / 'results.md'} and {out / 'results.json'}")
    return 0


def stop_on_sigterm(signum, frame):
    # An exception, so that subprocess.run kills the stage it waits for: otherwise `kill` of
    # the study leaves its training running, and a study started again shares the CPU with it.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    sys.exit(main())
