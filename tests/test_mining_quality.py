"""Mining quality on synthetic videos with ground truth, the pieces it is built from, and the
Ray executor (a real local Ray runtime with one CPU)."""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from vidmine.mining.config import MiningConfig
from vidmine.mining.decode import VideoReader
from vidmine.mining.motion import MotionDetector, color_histogram, is_shot_boundary, nms
from vidmine.mining.pipeline import MiningStats, Views, mine_video
from vidmine.mining.synthetic import generate_video, iou, track_quality
from vidmine.mining.track import (
    MAX_BOX_AREA,
    lk_track_and_check,
    make_tracker,
    masked_median,
    track_and_check,
)
from vidmine.storage.store import StorageConfig, Store


def test_synthetic_ground_truth_precision_and_recall(tmp_path):
    """Precision: crop pairs of one track on the same object (IoU >= 0.5); recall: objects
    with at least one such pair. Aggregated over several videos with photos or textures."""
    cfg = MiningConfig()
    pairs = correct = found = objects = 0
    for seed in range(6):
        path = tmp_path / f"syn{seed}.mp4"
        truth = generate_video(path, seed=seed)
        q = track_quality(mine_video(path, cfg), truth)
        pairs += q["pairs"]
        correct += round(q["precision"] * q["pairs"])
        found += round(q["recall"] * truth.boxes.shape[1])
        objects += truth.boxes.shape[1]
    precision, recall = correct / pairs, found / objects
    assert pairs >= 30
    assert precision >= 0.95, f"precision {precision:.3f} over {pairs} pairs"
    assert recall >= 0.8, f"recall {recall:.3f} over {objects} objects"


def test_generator_works_without_photos(tmp_path):
    truth = generate_video(tmp_path / "procedural.mp4", seed=3, seconds=1.0,
                           images_dir=tmp_path / "no-photos-here")
    visible = ~np.isnan(truth.boxes[..., 0])
    assert truth.boxes.shape == (25, 2, 4) and visible.all()
    with VideoReader(tmp_path / "procedural.mp4", MiningConfig()) as reader:
        frames = list(reader.frames())
    assert reader.frames_decoded == 25 and (reader.info.width, reader.info.height) == (320, 240)
    assert len(frames) == 8 and frames[0].rgb.shape == (240, 320, 3)   # 8 fps sampled


def test_shot_boundaries_end_tracks(shared_data):
    cfg = MiningConfig(working_long_side=320)
    stats = MiningStats()
    result = mine_video(shared_data / "videos" / "Megamind.avi", cfg, stats=stats)
    assert stats.shot_boundaries >= 1 and result.tracks
    with VideoReader(shared_data / "videos" / "Megamind.avi", cfg) as reader:
        frames = list(reader.frames())
    hists = [color_histogram(f.rgb) for f in frames]
    cuts = [frames[i + 1].index for i in range(len(frames) - 1)
            if is_shot_boundary(hists[i], hists[i + 1], cfg.shot_threshold)]
    for track in result.tracks:   # no track spans a cut
        assert not any(track.start_frame < c <= track.end_frame for c in cuts)


def test_nms_and_tracker_factory():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    keep = nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.3)
    assert keep.tolist() == [0, 2]
    for name in ("kcf", "csrt", "mil", "mosse"):   # ("lk" is not an OpenCV tracker object)
        assert make_tracker(name) is not None
    with pytest.raises(ValueError, match="unknown tracker"):
        make_tracker("medianflow-ish")


def test_one_flow_settles_a_frame_with_too_few_moving_points(tmp_path):
    """moving_points stops after the flow to the previous frame when the frame already has
    too few moving points against it: the verdict is the one both flows give."""
    path = tmp_path / "syn.mp4"
    generate_video(path, seed=2, seconds=1.5)
    cfg = MiningConfig()
    with VideoReader(path, cfg) as reader:
        grays = [Views(f, cfg).gray for f in reader.frames()]
    triples = [grays[i:i + 3] for i in range(len(grays) - 2)] + [[grays[0]] * 3]  # + static
    lazy = MotionDetector(cfg)
    lazy.flow = _CountingFlow(lazy.flow)
    both = MotionDetector(replace(cfg, min_moving_fraction=0.0))   # always runs both flows
    verdicts = []
    for a, b, c in triples:
        calls = lazy.flow.calls
        early, full = lazy.moving_points(a, b, c), both.moving_points(a, b, c)
        usable = lazy.frame_is_usable(full)
        assert lazy.frame_is_usable(early) == usable
        assert lazy.flow.calls - calls == (2 if full.fraction >= cfg.min_moving_fraction or
                                           early.fraction >= cfg.min_moving_fraction else 1)
        if usable:
            assert early.fraction == full.fraction
            assert (early.moving == full.moving).all()
        verdicts.append(usable)
    assert any(verdicts) and not verdicts[-1]
    assert lazy.flow.calls - 1 == 2 * (len(triples) - 1)   # the static triple: one flow


class _CountingFlow:
    def __init__(self, flow):
        self.flow, self.calls = flow, 0

    def calc(self, *args):
        self.calls += 1
        return self.flow.calc(*args)


def test_a_big_box_is_tracked_at_the_capped_size_in_the_frames_pixels():
    """track_and_check scales the frames so that the box covers MAX_BOX_AREA pixels at most,
    and answers in the frames' own pixels."""
    rng = np.random.default_rng(0)
    def texture(h, w):
        return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), np.uint8), (0, 0), 1.5)
    background, patch = texture(144, 192), texture(60, 80)
    frames = []
    for k in range(8):   # the patch moves 3 px right and 1 px down per frame
        frame = background.copy()
        frame[40 + k:100 + k, 40 + 3 * k:120 + 3 * k] = patch
        frames.append(frame)
    box = np.array([40, 40, 120, 100], np.float32)
    assert 80 * 60 > 4 * MAX_BOX_AREA
    boxes, error = track_and_check("kcf", frames, box)
    assert len(boxes) == len(frames) and error < 0.05
    for k, tracked in enumerate(boxes):   # uncapped KCF: 0.9; a tracker pixel is ~2 px here
        assert iou(box + [3 * k, k, 3 * k, k], tracked[None])[0] > 0.75, (k, tracked)


def test_lk_tracks_every_seed_at_once_and_loses_what_has_no_texture():
    """The "lk" tracker follows two textured patches moving apart (one LK call per step for
    both), checks each forward-backward, and drops a box on flat background."""
    rng = np.random.default_rng(1)
    def texture(h, w):
        return cv2.GaussianBlur(rng.integers(0, 256, (h, w), np.uint8), (0, 0), 1.5)
    a, b = texture(40, 50), texture(30, 30)
    frames = []
    for k in range(10):   # a moves 3 px right and 1 down per frame, b 2 px left
        frame = np.full((144, 192), 128, np.uint8)
        frame[20 + k:60 + k, 10 + 3 * k:60 + 3 * k] = a
        frame[90:120, 150 - 2 * k:180 - 2 * k] = b
        frames.append(frame)
    seeds = np.array([[10, 20, 60, 60], [150, 90, 180, 120], [80, 120, 100, 140]], np.float32)
    (boxes_a, err_a), (boxes_b, err_b), (boxes_flat, err_flat) = lk_track_and_check(frames, seeds)
    assert len(boxes_a) == len(boxes_b) == len(frames) and err_a < 0.05 and err_b < 0.05
    for k in range(len(frames)):
        assert iou(seeds[0] + [3 * k, k, 3 * k, k], boxes_a[k][None])[0] > 0.85, k
        assert iou(seeds[1] + [-2 * k, 0, -2 * k, 0], boxes_b[k][None])[0] > 0.85, k
    assert len(boxes_flat) == 1 and err_flat == float("inf")


def test_lk_box_grows_with_an_approaching_object():
    rng = np.random.default_rng(2)
    patch = cv2.GaussianBlur(rng.integers(0, 256, (64, 64), np.uint8), (0, 0), 2.0)
    frames, sides = [], [32 + 3 * k for k in range(8)]   # the object grows ~9 % a frame
    for side in sides:
        frame = np.full((144, 192), 128, np.uint8)
        y0, x0 = 72 - side // 2, 96 - side // 2
        frame[y0:y0 + side, x0:x0 + side] = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)
        frames.append(frame)
    seed = np.array([[80, 56, 112, 88]], np.float32)
    [(boxes, error)] = lk_track_and_check(frames, seed)
    assert len(boxes) == len(frames) and error < 0.05
    widths = [b[2] - b[0] for b in boxes]
    assert abs(widths[-1] - sides[-1]) < 0.15 * sides[-1], widths


def test_masked_median_is_numpys_median_of_the_kept_entries_row_by_row():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(6, 2, 64)).astype(np.float32)
    mask = rng.random((6, 1, 64)) < np.array([0.0, 1 / 64, 0.1, 0.5, 0.9, 1.0])[:, None, None]
    mask[1, 0, 5] = True      # exactly one entry: odd counts, even counts and none all occur
    got = masked_median(values, mask)
    assert got.shape == (6, 2) and np.isnan(got[0]).all()
    for i in range(1, 6):
        kept = values[i][:, mask[i, 0]]
        np.testing.assert_array_equal(got[i], np.median(kept, axis=-1))


def test_selective_search_proposer_mines_tracks(tmp_path):
    path = tmp_path / "ss.mp4"
    generate_video(path, seed=4, seconds=1.5)
    result = mine_video(path, MiningConfig(proposer="selective_search", frame_interval_s=0))
    assert result.tracks and all(t.proposer == "selective_search" for t in result.tracks)


@pytest.mark.slow
def test_ray_executor_mines_like_the_local_one(tmp_path):
    ray = pytest.importorskip("ray")
    from vidmine.mining.executors import run_ray
    folder = tmp_path / "videos"
    generate_video(folder / "a.mp4", seed=5, seconds=1.5)
    (folder / "broken.mp4").write_text("not a video")
    store = Store(StorageConfig(workdir=str(tmp_path / "work")))
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)   # local_mode is gone
    try:
        summary = run_ray(store, MiningConfig(workers=1, stable_s=0, working_long_side=320),
                          folder)
    finally:
        ray.shutdown()
    counts = store.index.video_counts()
    store.close()
    assert summary.done == 1 and list(summary.failed) == [str(folder.absolute() / "broken.mp4")]
    assert counts["done"] == 1 and counts["failed"] == 1 and summary.tracks >= 1
