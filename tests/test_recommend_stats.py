"""Confidence intervals of the recommendation: Student-t quantiles, paired ratio intervals, verdicts."""
import math

import pytest

from benchmark.errors import MeasurementError
from benchmark.recommend import stats as st


@pytest.mark.parametrize("p, df, expected", [
    (0.975, 1, 12.706205), (0.975, 2, 4.302653), (0.975, 4, 2.776445), (0.975, 10, 2.228139),
    (0.995, 3, 5.840909), (0.9, 30, 1.310415), (0.99, 4, 3.746947),
])
def test_t_quantile_matches_tables(p, df, expected):
    assert st.t_quantile(p, df) == pytest.approx(expected, rel=2e-4)


def test_t_quantile_is_symmetric_and_inverts_the_cdf():
    for df in (1, 3, 7, 50):
        for p in (0.6, 0.9, 0.99):
            q = st.t_quantile(p, df)
            assert st.t_cdf(q, df) == pytest.approx(p, abs=1e-9)
            assert st.t_quantile(1 - p, df) == pytest.approx(-q)


def test_ratio_interval_is_paired_over_repeats():
    # Both sides drift together from repeat to repeat: the paired ratio stays tight at 2.
    ref = [1.0, 1.5, 0.8, 1.2, 1.1]
    cand = [r / 2.0 * f for r, f in zip(ref, (1.01, 0.99, 1.0, 1.02, 0.98))]
    point, lo, hi = st.ratio_interval(ref, cand)
    assert lo < point < hi
    assert 1.95 < lo and hi < 2.05
    # Unpaired intervals of the same data are far wider: the drift dominates each side's spread.
    ref_lo, ref_hi = st.p50_interval(ref)
    cand_lo, cand_hi = st.p50_interval(cand)
    assert (ref_hi / cand_lo - ref_lo / cand_hi) > 5 * (hi - lo)


def test_interval_of_identical_sides_contains_one():
    ref = [1.0, 1.02, 0.99, 1.01]
    cand = [1.01, 1.0, 1.0, 1.0]
    _, lo, hi = st.ratio_interval(ref, cand)
    assert lo < 1.0 < hi
    assert st.verdict(lo, hi) == st.NO_DIFFERENCE


def test_verdicts():
    assert st.verdict(1.1, 1.3) == st.FASTER
    assert st.verdict(0.7, 0.9) == st.SLOWER
    assert st.verdict(0.9, 1.1) == st.NO_DIFFERENCE
    assert st.verdict(float("nan"), float("nan")) == st.NO_DIFFERENCE


def test_one_repeat_gives_a_point_without_interval():
    point, lo, hi = st.ratio_interval([2.0], [1.0])
    assert point == pytest.approx(2.0) and math.isnan(lo) and math.isnan(hi)


def test_more_repeats_and_lower_levels_narrow_the_interval():
    ref = [1.0, 1.1, 0.95, 1.05, 1.0, 1.02]
    cand = [0.5, 0.52, 0.5, 0.49, 0.51, 0.5]
    _, lo3, hi3 = st.ratio_interval(ref[:3], cand[:3])
    _, lo6, hi6 = st.ratio_interval(ref, cand)
    assert hi6 - lo6 < hi3 - lo3
    _, lo_b, hi_b = st.ratio_interval(ref, cand, st.bonferroni(0.95, 3))
    assert lo_b < lo6 and hi_b > hi6
    assert st.bonferroni(0.95, 3) == pytest.approx(1 - 0.05 / 3)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(MeasurementError, match="positive"):
        st.ratio_interval([1.0, -1.0], [1.0, 1.0])
    with pytest.raises(MeasurementError, match="differ in number"):
        st.ratio_interval([1.0, 1.0], [1.0])
    with pytest.raises(MeasurementError, match="at least 2"):
        st.mean_interval([1.0])


def test_numbers_for_people():
    assert st.times(2.234) == "2.23x" and st.times(0.000057) == "5.7e-05x"
    assert st.points(-3.1) == "-3.10" and st.points(-0.0031) == "-0.0031" and st.points(-0.0) == "+0.00"
