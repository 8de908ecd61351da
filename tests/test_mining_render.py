"""The 3D renderer and the videos of solids: geometry against closed forms, ground truth
that matches the pixels, turns that show other faces, held-out pools that stay apart."""
from __future__ import annotations

import hashlib
import json
import math

import av
import numpy as np
import pytest

from vidmine.mining.render import (
    CATEGORIES,
    Camera,
    Light,
    Pose,
    make_solid,
    render_frame,
    render_solid,
    rotation,
    visible_boxes,
)
from vidmine.mining.scenes import HELDOUT_BASE, generate_solids_video, pool_object
from vidmine.mining.synthetic import GroundTruth, generate_dataset, texture_source

CAM = Camera(160, 120)
LIGHT = Light(np.array([0.0, 0.0, -1.0]))   # from the camera: a face turned to it is lit


def _flat(rng, n, category=None):
    """Textures of one flat colour each, so a pixel's colour tells which face it shows."""
    return [np.full((8, 8, 3), 40 + 30 * k, np.uint8) for k in range(n)]


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_category_renders_inside_its_projected_bound(category):
    solid = make_solid(5, texture_source(None), category)
    pose = Pose(np.array([0.2, -0.1, 5.0]), rotation([1, 2, 3], 0.7), 0.8)
    back = np.zeros((CAM.height, CAM.width, 3), np.float32)
    frame, ids = render_frame(back, [solid], [pose], CAM, LIGHT)
    assert (ids == 0).sum() > 200 and np.isfinite(frame).all()
    # every object pixel lies within the projection of the bounding sphere
    ys, xs = np.nonzero(ids == 0)
    centre = CAM.project(pose.position)
    reach = CAM.focal * solid.radius * pose.scale / math.sqrt(5.0 ** 2 - (solid.radius * pose.scale) ** 2)
    assert np.hypot(xs + 0.5 - centre[0], ys + 0.5 - centre[1]).max() <= reach + 1.5


def test_a_sphere_is_the_disc_its_radius_projects_to():
    solid = make_solid(1, _flat, "sphere")
    r = solid.primitives[0].size[0]
    pose = Pose(np.array([0.0, 0.0, 6.0]), np.eye(3), 1.0)
    _, depth, _ = render_solid(solid, pose, CAM, LIGHT)
    expected = math.pi * (CAM.focal * r / math.sqrt(36 - r * r)) ** 2
    assert np.isfinite(depth).sum() == pytest.approx(expected, rel=0.05)
    assert np.nanmin(np.where(np.isfinite(depth), depth, np.nan)) == pytest.approx(6.0 - r, abs=0.02)


def test_the_nearer_object_hides_the_farther_one():
    a, b = make_solid(1, _flat, "box"), make_solid(2, _flat, "box")
    back = np.zeros((CAM.height, CAM.width, 3), np.float32)
    near = Pose(np.array([0.0, 0.0, 4.0]), np.eye(3), 0.6)
    far = Pose(np.array([0.3, 0.0, 8.0]), np.eye(3), 1.2)
    for order in ((a, b, near, far), (b, a, far, near)):   # drawing order does not matter
        _, ids = render_frame(back, list(order[:2]), list(order[2:]), CAM, LIGHT)
        front = 0 if order[2] is near else 1
        cx, cy = int(CAM.project(near.position)[0]), int(CAM.project(near.position)[1])
        assert ids[cy, cx] == front and (ids == 1 - front).any()


def test_turning_a_box_shows_other_faces():
    solid = make_solid(3, _flat, "box")
    back = np.zeros((CAM.height, CAM.width, 3), np.float32)
    seen = []
    for angle in (0.0, math.pi / 2, math.pi):
        pose = Pose(np.array([0.0, 0.0, 5.0]), rotation([0, 1, 0], angle) @ solid.tilt.T, 1.0)
        frame, ids = render_frame(back, [solid], [pose], CAM, LIGHT)
        assert (ids == 0).sum() > 100
        seen.append(set(np.unique(np.round(frame[ids == 0][:, 0] * 255 / 10))))
    assert seen[0] != seen[1] and seen[0] != seen[2]   # other textures came into view


def test_solids_video_ground_truth_matches_its_pixels(tmp_path):
    path = tmp_path / "solids.mp4"
    truth = generate_solids_video(path, seed=4, seconds=1.0, n_objects=3)
    assert truth.boxes.shape == (25, 3, 4)
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 25 and frames[0].shape == (240, 320, 3)
    ids = [o["instance"] for o in truth.objects]
    assert len(set(ids)) == 3 and all(0 <= i < HELDOUT_BASE for i in ids)
    assert {o["category"] for o in truth.objects} <= set(CATEGORIES)
    # the objects stay in view and move (their boxes come from the id map, tested above)
    visible = ~np.isnan(truth.boxes[..., 0])
    assert visible.mean() > 0.9
    first, last = truth.boxes[0], truth.boxes[-1]
    assert np.nanmax(np.abs(first - last)) > 3
    # the truth file round-trips and keeps ids fixed across frames
    generate_dataset(tmp_path / "set", n_videos=1, seed=2, kind="solids", seconds=0.4)
    saved = json.loads(next((tmp_path / "set").glob("*.truth.json")).read_text())
    assert len(saved["boxes"]) == 10 and len(saved["objects"]) == 3
    assert len(saved["poses"][0][0]) == 12
    back = GroundTruth.from_json(json.loads(json.dumps(truth.to_json())))
    assert np.array_equal(np.isnan(back.boxes), np.isnan(truth.boxes))
    assert np.allclose(back.boxes, truth.boxes, atol=0.05, equal_nan=True)
    assert back.objects == truth.objects and back.poses.shape == truth.poses.shape


def test_render_matches_the_id_map_it_reports():
    solids = [pool_object("train", k) for k in range(3)]
    poses = [Pose(np.array([x, 0.0, 6.0]), rotation([1, 1, 0], 0.4), 0.8) for x in (-1.5, 0.0, 1.5)]
    back = np.full((CAM.height, CAM.width, 3), 0.25, np.float32)
    frame, ids = render_frame(back, solids, poses, CAM, LIGHT)
    assert np.allclose(frame[ids < 0], 0.25)
    boxes = visible_boxes(ids, 3)
    for k in range(3):
        ys, xs = np.nonzero(ids == k)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(boxes[k])


def test_pools_of_objects_are_stable_and_apart():
    a, b = pool_object("train", 7), pool_object("train", 7)
    assert a.category == b.category and np.array_equal(a.atlas, b.atlas)
    held = pool_object("heldout", 7)
    assert held.object_id == HELDOUT_BASE + 7 and not np.array_equal(held.atlas[:64], a.atlas[:64])
    with pytest.raises(ValueError, match="pool"):
        pool_object("test", 1)


def _brightness_quantiles(solid) -> np.ndarray:
    # HSV value: a hue turn or saturation change leaves it, so it shows the material alone
    import cv2
    value = cv2.cvtColor((solid.atlas * 255).astype(np.uint8), cv2.COLOR_RGB2HSV)[..., 2].ravel()
    return np.quantile(value.astype(np.float64), np.linspace(0, 1, 101))


@pytest.mark.parametrize("category_look", [False, True])
def test_category_look_makes_a_category_alike_in_material_not_in_colour(category_look):
    import itertools
    solids = [pool_object("train", k, category=CATEGORIES[k % len(CATEGORIES)],
                          category_look=category_look) for k in range(4 * len(CATEGORIES))]
    material = [_brightness_quantiles(s) for s in solids]
    hue = [float(np.mean(s.atlas[..., 0] - s.atlas[..., 2])) for s in solids]
    same, other, same_hue = [], [], []
    for i, j in itertools.combinations(range(len(solids)), 2):
        gap = np.abs(material[i] - material[j]).mean()
        if solids[i].category == solids[j].category:
            same.append(gap)
            same_hue.append(abs(hue[i] - hue[j]))
        else:
            other.append(gap)
    ratio = np.mean(same) / np.mean(other)
    if category_look:
        assert ratio < 0.4, ratio   # one material per category
        assert np.mean(same_hue) > 0.03   # hues stay each object's own
    else:
        assert ratio > 0.8, ratio   # by default a category shares its shape alone
    # one object is the same in every process (the category's material is seeded stably)
    again = pool_object("train", 0, category=CATEGORIES[0], category_look=category_look)
    assert np.array_equal(again.atlas, solids[0].atlas)


def test_category_look_reaches_videos_and_sets(tmp_path):
    from vidmine.mining.cli import main as mine
    from vidmine.mining.synthetic import GroundTruth
    for look in ([], ["--category-look"]):
        out = tmp_path / ("look" if look else "plain")
        assert mine(["synth", str(out), "--videos", "1", "--kind", "solids", "--seed", "3",
                     *look]) == 0
    plain, look = (next((tmp_path / d).glob("*.mp4")).read_bytes() for d in ("plain", "look"))
    assert plain != look
    truth = [GroundTruth.from_json(json.loads(next((tmp_path / d).glob("*.truth.json")).read_text()))
             for d in ("plain", "look")]
    assert truth[0].objects == truth[1].objects   # same objects and motion, other materials
    assert mine(["synth", str(tmp_path / "flat"), "--category-look"]) == 2
    assert mine(["synth-sets", str(tmp_path / "sets"), "--objects-per-category", "1",
                 "--category-look", "--json"]) == 0
    assert json.loads((tmp_path / "sets" / "manifest.json").read_text())["category_look"] is True


def test_pool_size_bounds_which_instances_videos_show(tmp_path):
    from vidmine.mining.cli import main as mine
    assert mine(["synth", str(tmp_path), "--videos", "3", "--kind", "solids", "--pool-size", "4",
                 "--seed", "5"]) == 0
    shown = {o["instance"] for f in tmp_path.glob("*.truth.json")
             for o in json.loads(f.read_text())["objects"]}
    assert len(shown) >= 3 and shown <= set(range(4))
    assert mine(["synth", str(tmp_path / "none"), "--kind", "solids", "--pool-size", "2"]) == 2
    assert not (tmp_path / "none").exists()


def test_solids_video_is_the_same_file_every_time(tmp_path):
    # a study's lost data folder is made again by the same command: same seed, same bytes
    digests = set()
    for k in range(3):
        generate_solids_video(tmp_path / f"{k}.mp4", seed=11, seconds=2.0)
        digests.add(hashlib.sha256((tmp_path / f"{k}.mp4").read_bytes()).hexdigest())
    assert len(digests) == 1
