"""report/compare.py: the comparison statistics on their own (seed-level t-intervals, image-level SEs, verdicts),
against values computed by hand."""
import math

import pytest

import compare

from .hand_quantiles import T1, T2


def test_t_quantiles_match_their_closed_forms():
    assert compare.t_quantile(1) == pytest.approx(T1, rel=1e-9)  # 12.706
    assert compare.t_quantile(2) == pytest.approx(T2, rel=1e-9)  # 4.303


def test_seed_level_and_image_level_se_disagree():
    """Three seeds whose per-image differences barely vary (image SE 0.0033) but whose per-seed differences do
    (-0.10, +0.02, -0.04): the seed-level interval includes 0, although 2 image SEs would not."""
    per_image = {1: [-0.11, -0.10, -0.09], 2: [0.01, 0.02, 0.03], 3: [-0.05, -0.04, -0.03]}
    result = compare.seed_difference({1: -0.10, 2: 0.02, 3: -0.04}, per_image)
    assert result["seeds"] == [1, 2, 3] and result["mean"] == pytest.approx(-0.04)
    seed_se = math.sqrt((0.06 ** 2 + 0.06 ** 2 + 0) / 2) / math.sqrt(3)  # sd 0.06 (n - 1), over sqrt(3)
    assert result["seed_se"] == pytest.approx(seed_se)
    assert result["interval"] == pytest.approx((-0.04 - T2 * seed_se, -0.04 + T2 * seed_se))
    assert result["image_se"] == pytest.approx(math.sqrt(3 * 0.01 ** 2 / 3) / 3)  # each SE_s = 0.01 / sqrt(3)
    assert abs(result["mean"]) > 2 * result["image_se"] and result["verdict"] == "no detectable difference"


def test_an_interval_that_excludes_zero_is_a_difference():
    lower = compare.seed_difference({1: -0.10, 2: -0.11, 3: -0.12})  # sd 0.01, SE 0.01 / sqrt(3)
    assert lower["interval"] == pytest.approx((-0.11 - T2 * 0.01 / math.sqrt(3), -0.11 + T2 * 0.01 / math.sqrt(3)))
    assert lower["verdict"] == "lower" and lower["image_se"] is None
    assert compare.seed_difference({1: 0.5, 2: 0.51})["verdict"] == "higher"  # 0.505 ± 12.7 x 0.005
    assert compare.seed_difference({1: 0.5, 2: 0.6})["verdict"] == "no detectable difference"  # ± 0.635
    one = compare.seed_difference({7: -0.3})  # one seed: no spread, so no interval and no claim
    assert one["mean"] == -0.3 and one["seed_se"] is None and one["verdict"] == "no detectable difference"
