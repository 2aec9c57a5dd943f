"""softswitch/histogram.py: buckets as Prometheus reads them (le inclusive, cumulative, +Inf last)."""

from hypothesis import given
from hypothesis import strategies as st

from softswitch.histogram import Histogram


def test_histogram_bounds_are_inclusive_and_the_rest_counts_only_in_inf():
    h = Histogram((0.01, 0.1, 1.0))
    for value in (0.0, 0.01, 0.05, 0.1, 0.5, 2.0, 7.5):
        h.observe(value)
    assert h.cumulative() == [("0.01", 2), ("0.1", 4), ("1.0", 5), ("+Inf", 7)]
    assert h.count == 7 and abs(h.sum - 10.16) < 1e-9


@given(st.lists(st.floats(min_value=0.0, max_value=5.0), max_size=50))
def test_histogram_hypothesis_each_bucket_counts_what_is_at_most_its_bound(values):
    bounds = (0.001, 0.5, 1.0, 2.5)
    h = Histogram(bounds)
    for value in values:
        h.observe(value)
    expected = [(repr(b), sum(v <= b for v in values)) for b in bounds] + [("+Inf", len(values))]
    assert h.cumulative() == expected
