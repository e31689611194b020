from __future__ import annotations

import numpy as np
import pytest

from compkit.evaluation.postprocess import apply_rule, candidate_rules, median_component_area


def blobs():
    mask = np.zeros((20, 20), np.uint8)
    mask[1:9, 1:9] = 1  # 64 px
    mask[12:14, 12:14] = 1  # 4 px
    mask[17, 17] = 1  # 1 px
    return mask


def test_largest_keeps_one_component():
    out = apply_rule(blobs(), {"rule": "largest"})
    assert out.sum() == 64 and out[1:9, 1:9].all()


def test_min_size_drops_small_components():
    out = apply_rule(blobs(), {"rule": "min_size", "min_area": 2 / 400})
    assert out.sum() == 68 and out[17, 17] == 0


def test_none_and_empty_are_unchanged():
    assert np.array_equal(apply_rule(blobs(), None), blobs())
    assert np.array_equal(apply_rule(blobs(), {"rule": "none"}), blobs())
    assert apply_rule(np.zeros((5, 5)), {"rule": "largest"}).sum() == 0


def test_candidates_scale_with_the_median_area():
    area = median_component_area(blobs())
    assert area == 4 / 400
    rules = candidate_rules(area)
    # min_size at a tenth, three tenths and six tenths of the median component's area
    assert rules[:2] == [{"rule": "none"}, {"rule": "largest"}]
    assert [r["rule"] for r in rules[2:]] == ["min_size"] * 3
    assert [r["min_area"] for r in rules[2:]] == pytest.approx([0.1 * area, 0.3 * area, 0.6 * area])


def test_empty_is_a_candidate_only_for_a_class_absent_from_every_truth():
    assert {"rule": "empty"} in candidate_rules(0.0)
    assert all(rule["rule"] != "empty" for rule in candidate_rules(0.01))
    assert not apply_rule(blobs(), {"rule": "empty"}).any()
