"""Paired intervals for the difference between two networks on one held-out set."""
from __future__ import annotations

import numpy as np
import pytest

from vidmine.evaluation.compare import against, format_interval, paired_interval
from vidmine.evaluation.retrieval import per_label_ap, retrieval_metrics


def test_a_constant_shift_has_no_spread_and_no_difference_has_none_either():
    rng = np.random.default_rng(0)
    base = rng.uniform(20, 60, 18)
    assert paired_interval(base + 2.5, base) == pytest.approx((2.5, 2.5, 2.5))
    assert paired_interval(base, base) == (0.0, 0.0, 0.0)


def test_the_interval_resolves_a_consistent_gain_and_not_noise():
    rng = np.random.default_rng(1)
    base = rng.uniform(20, 60, 18)
    consistent = base + 3 + rng.normal(0, 1, 18)       # every unit a little better
    noisy = base + rng.normal(0, 6, 18) + 0.5           # a small mean gain, units all over
    d, lo, hi = paired_interval(consistent, base)
    assert lo > 0 and lo <= d <= hi
    d, lo, hi = paired_interval(noisy, base)
    assert lo < 0 < hi
    # more units of the same spread: a narrower interval
    many = rng.uniform(20, 60, 400)
    _, lo400, hi400 = paired_interval(many + rng.normal(0, 6, 400), many)
    assert hi400 - lo400 < (hi - lo) / 2.5


def test_weights_make_the_point_the_weighted_mean_and_bad_input_is_refused():
    a, b, w = np.array([1.0, 0.0, 0.0]), np.zeros(3), np.array([2.0, 1.0, 1.0])
    assert paired_interval(a, b, w)[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one value per unit"):
        paired_interval(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="one value per unit"):
        paired_interval(np.array([]), np.array([]))


def test_against_compares_every_model_with_the_reference_only():
    scores = {"net": np.array([3.0, 4.0]), "untrained": np.array([1.0, 1.0]),
              "floor": np.array([1.0, 2.0])}
    out = against(scores, "untrained")
    assert set(out) == {"net", "floor"} and out["net"][0] == pytest.approx(2.5)
    assert against(scores, None) == {} and against(scores, "absent") == {}
    assert format_interval(0.04, -0.011, 0.09) == "+0.04 [-0.01, +0.09]"


def test_per_label_ap_weighted_by_queries_is_the_map():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(7), [2, 3, 4, 5, 3, 2, 6])     # unequal queries per label
    feats = rng.normal(size=(len(labels), 16)) + 0.8 * np.eye(16)[labels % 16]
    m = retrieval_metrics(feats, labels, per_query=True)
    per_label, queries = per_label_ap(m["ap"], m["ap_labels"])
    assert len(per_label) == 7 and queries.sum() == m["queries"]
    assert np.sum(per_label * queries) / queries.sum() == pytest.approx(m["mAP"], abs=1e-6)
    # and the paired interval of a model with itself shifted is exactly that shift
    d, lo, hi = paired_interval(per_label + 0.1, per_label, weights=queries)
    assert (d, lo, hi) == pytest.approx((0.1, 0.1, 0.1))


def test_a_chart_of_more_than_ten_models_gives_each_its_own_colour(tmp_path):
    """matplotlib's default cycle repeats from the eleventh bar (the study's merged chart drew
    its hand-crafted floor in plain MoCo's blue); up to ten, charts keep the default colours."""
    import cv2
    import matplotlib.pyplot as plt

    from vidmine.evaluation.report import bar_chart, bar_colours

    assert bar_colours(10) == list(plt.get_cmap("tab10").colors)
    colours = bar_colours(11)
    assert len(set(colours)) == 11
    models = {f"model {i}": 10.0 + i for i in range(11)}
    png = bar_chart({"viewpoint": models, "instance": models}, "t", "RIS", tmp_path / "c.png")
    bgr = cv2.imread(str(png)).astype(int)
    for r, g, b in colours:   # every bar's colour is drawn somewhere (bars and legend)
        target = np.array([b, g, r]) * 255
        assert (np.abs(bgr - target).max(axis=2) <= 2).sum() > 50, (r, g, b)
