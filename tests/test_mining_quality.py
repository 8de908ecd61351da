"""Mining quality on synthetic videos with ground truth, the pieces it is built from, and the
Ray executor (a real local Ray runtime with one CPU)."""
from __future__ import annotations

import numpy as np
import pytest

from vidmine.mining.config import MiningConfig
from vidmine.mining.decode import VideoReader
from vidmine.mining.motion import color_histogram, is_shot_boundary, nms
from vidmine.mining.pipeline import MiningStats, mine_video
from vidmine.mining.synthetic import generate_video, track_quality
from vidmine.mining.track import make_tracker
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
    for name in ("kcf", "csrt", "mil", "mosse"):
        assert make_tracker(name) is not None
    with pytest.raises(ValueError, match="unknown tracker"):
        make_tracker("medianflow-ish")


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
