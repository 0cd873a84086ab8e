import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dask_pipeline.errors import ConfigError, DataError
from dask_pipeline.folds import (
    Fold,
    FoldsConfig,
    folds_frame,
    folds_from_dates,
    make_folds,
    parse_size,
    walk_forward,
)


def bars(n, start="2015-01-01", freq="B"):
    return pd.date_range(start, periods=n, freq=freq, tz="UTC", name="timestamp")


def positions(idx, fold):
    """(train positions, test positions) of a fold in ``idx``."""
    return np.flatnonzero(fold.train_mask(idx)), np.flatnonzero(fold.test_mask(idx))


def test_rolling_counts_and_boundaries():
    idx = bars(1000)
    folds = walk_forward(idx, train=500, test=100)
    assert len(folds) == 5
    for k, fold in enumerate(folds):
        tr, te = positions(idx, fold)
        assert fold.index == k
        assert tr.tolist() == list(range(100 * k, 500 + 100 * k))
        assert te.tolist() == list(range(500 + 100 * k, 600 + 100 * k))
        assert (fold.n_train, fold.n_test) == (500, 100)
        assert fold.train_start == idx[100 * k] and fold.test_end == idx[599 + 100 * k]


def test_expanding_keeps_start_and_last_window_is_clipped():
    idx = bars(1050)
    folds = walk_forward(idx, train=500, test=100, mode="expanding")
    assert len(folds) == 6
    assert all(f.train_start == idx[0] for f in folds)
    assert [f.n_train for f in folds] == [500, 600, 700, 800, 900, 1000]
    assert folds[-1].n_test == 50 and folds[-1].test_end == idx[-1]
    tested = np.concatenate([positions(idx, f)[1] for f in folds])
    assert tested.tolist() == list(range(500, 1050))  # every bar tested once


def test_step_smaller_than_test_overlaps_and_stops_at_end():
    idx = bars(700)
    folds = walk_forward(idx, train=400, test=200, step=100)
    assert [(f.test_start, f.test_end) for f in folds] == [
        (idx[400], idx[599]), (idx[500], idx[699])
    ]


def test_purge_drops_exactly_the_last_bars():
    idx = bars(800)
    fold = walk_forward(idx, train=500, test=100, purge=7)[1]
    tr, te = positions(idx, fold)
    assert tr[0] == 100 and tr[-1] == 600 - 1 - 7 and len(tr) == 493
    assert te[0] - tr[-1] == 8


def test_embargo_drops_bars_after_earlier_test_windows():
    idx = bars(900)
    folds = walk_forward(idx, train=400, test=100, mode="expanding", purge=2, embargo=3)
    # test windows start at 400, 500, 600, ...; after window j (ending at e_j) bars
    # e_j, e_j+1, e_j+2 leave every later training set.
    tr0, _ = positions(idx, folds[0])
    tr1, _ = positions(idx, folds[1])
    tr2, _ = positions(idx, folds[2])
    assert tr0.tolist() == list(range(0, 398))
    assert tr1.tolist() == list(range(0, 498))  # bars 500.. are not in range yet
    assert tr2.tolist() == [p for p in range(0, 598) if p not in (500, 501, 502)]
    assert folds[2].embargoed == ((idx[500], idx[502]),)
    assert folds[2].n_train == 595
    tr3, _ = positions(idx, folds[3])
    assert set(range(500, 503)) | set(range(600, 603)) == set(range(0, 698)) - set(tr3)


def test_embargo_in_rolling_mode_with_long_training():
    idx = bars(800)
    folds = walk_forward(idx, train=300, test=100, embargo=5)
    tr2, _ = positions(idx, folds[2])  # training 200..499 covers the end of window 0 (300..399)
    assert set(range(200, 500)) - set(tr2) == set(range(400, 405))


def test_no_overlap_between_train_and_test():
    idx = bars(1500)
    for mode in ("rolling", "expanding"):
        for fold in walk_forward(idx, "1Y", "3M", mode=mode, purge=5, embargo=2):
            tr, te = positions(idx, fold)
            assert not set(tr) & set(te)
            assert tr.max() < te.min() - 5


def test_calendar_spans():
    idx = bars(1200, start="2015-01-01")
    folds = walk_forward(idx, "2Y", "6M")
    assert folds[0].train_start == idx[0]
    assert folds[0].test_start == pd.Timestamp("2017-01-02", tz="UTC")  # first bar >= 2017-01-01
    assert folds[0].test_end == pd.Timestamp("2017-06-30", tz="UTC")
    assert folds[1].test_start == pd.Timestamp("2017-07-03", tz="UTC")
    assert folds[1].train_start == pd.Timestamp("2015-07-01", tz="UTC")
    # windows tile the data after the first training span
    ends = [f.test_end for f in folds[:-1]]
    starts = [f.test_start for f in folds[1:]]
    assert all(idx.get_loc(s) == idx.get_loc(e) + 1 for s, e in zip(starts, ends))
    assert folds[-1].test_end == idx[-1]


def test_calendar_weeks_days_and_mixed_units():
    idx = bars(300, freq="D")
    folds = walk_forward(idx, "30D", "4W", step=14)
    assert folds[0].n_train == 30 and folds[0].n_test == 28
    assert folds[1].test_start == idx[30 + 14]


def test_too_little_data_states_the_numbers():
    with pytest.raises(DataError, match="need 756 bars for train 504 \\+ test 252, have 500"):
        walk_forward(bars(500), 504, 252)
    with pytest.raises(DataError, match="train 2Y \\+ test 6M, have 400 bars"):
        walk_forward(bars(400), "2Y", "6M")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"train": "2X", "test": 10},
        {"train": 0, "test": 10},
        {"train": 100, "test": 10, "mode": "sliding"},
        {"train": 100, "test": 10, "purge": -1},
        {"train": 100, "test": 10, "purge": 100},
    ],
)
def test_bad_parameters_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        walk_forward(bars(500), **kwargs)


def test_embargo_that_eats_all_training_is_a_data_error():
    with pytest.raises(DataError, match="no training bars left after purge 0 and embargo 1"):
        walk_forward(bars(60), train=10, test=1, embargo=1)


def test_bad_index_is_data_error():
    idx = bars(300)
    with pytest.raises(DataError, match="unique"):
        walk_forward(idx.append(idx[-1:]), 100, 50)
    with pytest.raises(DataError, match="increasing"):
        walk_forward(idx[::-1], 100, 50)


def test_parse_size():
    assert parse_size(504) == parse_size("504")
    assert str(parse_size("2y")) == "2Y"
    assert parse_size("6M").offset(3) == pd.DateOffset(months=18)


def test_config_defaults_and_validation():
    cfg = FoldsConfig()
    assert (cfg.mode, cfg.train, cfg.test, cfg.step, cfg.purge, cfg.embargo) == (
        "rolling", 504, 126, None, None, 0
    )
    assert FoldsConfig(train="2y", test="126").train == "2Y"
    with pytest.raises(ValidationError, match="calendar span"):
        FoldsConfig(train="two years")
    with pytest.raises(ValidationError):
        FoldsConfig(purge=-1)
    with pytest.raises(ValidationError):
        FoldsConfig(window=3)


def test_make_folds_purges_the_label_horizon_by_default():
    idx = bars(800)
    folds = make_folds(idx, FoldsConfig(train=500, test=100), horizon=5)
    assert folds[0].n_train == 495
    with pytest.raises(ConfigError, match="purge=2 is below label.horizon=5"):
        make_folds(idx, FoldsConfig(train=500, test=100, purge=2), horizon=5)


def test_folds_from_dates_matches_walk_forward():
    idx = bars(1000)
    got = folds_from_dates(idx, "2015-03-02", "2018-06-29", 250, 60, purge=3)
    window = idx[(idx >= pd.Timestamp("2015-03-02", tz="UTC"))
                 & (idx <= pd.Timestamp("2018-06-29", tz="UTC"))]
    assert got == walk_forward(window, 250, 60, 60, purge=3)
    assert got[0].train_start == pd.Timestamp("2015-03-02", tz="UTC")


def test_folds_frame_and_masks_on_a_stacked_index():
    idx = bars(400)
    folds = walk_forward(idx, 200, 100, embargo=2, mode="expanding")
    frame = folds_frame(folds)
    assert list(frame["fold"]) == [0, 1] and list(frame["n_test"]) == [100, 100]
    stacked = idx.append(idx)  # two symbols on the same calendar
    assert folds[1].train_mask(stacked).sum() == 2 * folds[1].n_train
    assert isinstance(folds[0], Fold) and hash(folds[0])


def reference_folds(n, train, test, step, mode, purge, embargo):
    """Brute-force (train positions, test positions) per fold, straight from the definitions."""
    step = step or test
    folds, ends, start = [], [], train
    while start < n:
        end = min(start + test, n)
        lo = 0 if mode == "expanding" else start - train
        rows = [p for p in range(lo, start - purge) if not any(e <= p < e + embargo for e in ends)]
        folds.append((rows, list(range(start, end))))
        ends.append(end)
        if end >= n:
            break
        start += step
    return folds


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(60, 400),
    train=st.integers(10, 120),
    test=st.integers(1, 60),
    step=st.one_of(st.none(), st.integers(1, 80)),
    mode=st.sampled_from(["rolling", "expanding"]),
    purge=st.integers(0, 9),
    embargo=st.integers(0, 9),
)
def test_property_train_precedes_test_by_more_than_purge(
    n, train, test, step, mode, purge, embargo
):
    idx = bars(n)
    expected = reference_folds(n, train, test, step, mode, purge, embargo)
    if n < train + test or any(not rows for rows, _ in expected):
        with pytest.raises(DataError):
            walk_forward(idx, train, test, step, mode, purge, embargo)
        return
    folds = walk_forward(idx, train, test, step, mode, purge, embargo)
    assert len(folds) == len(expected)
    for fold, (rows, tested) in zip(folds, expected):
        tr, te = positions(idx, fold)
        assert tr.tolist() == rows and te.tolist() == tested
        assert (fold.n_train, fold.n_test) == (len(rows), len(tested))
        assert tr.max() < te.min() - purge  # every train row precedes every test row
    assert folds[-1].test_end == idx[-1] or (step or test) > test


@settings(max_examples=40, deadline=None)
@given(
    train=st.sampled_from(["3M", "6M", "1Y", "90D", "20W", 120]),
    test=st.sampled_from(["1M", "2M", "30D", "4W", 40]),
    step=st.sampled_from([None, "1M", "2W", 25]),
    mode=st.sampled_from(["rolling", "expanding"]),
    purge=st.integers(0, 9),
    embargo=st.integers(0, 4),
)
def test_property_calendar_folds_never_leak(train, test, step, mode, purge, embargo):
    idx = bars(700)
    folds = walk_forward(idx, train, test, step, mode, purge, embargo)
    ends = []
    for fold in folds:
        tr, te = positions(idx, fold)
        assert len(tr) == fold.n_train > 0 and len(te) == fold.n_test > 0
        assert tr.max() < te.min() - purge
        assert np.array_equal(te, np.arange(te.min(), te.max() + 1))
        assert not any(e <= p < e + embargo for e in ends for p in tr)
        ends.append(te.max() + 1)
    starts = [f.test_start for f in folds]
    assert starts == sorted(set(starts))


# ------------------------------------------------- a universe of ragged histories and calendars

from dask_pipeline.folds import MIN_HISTORY, plan_folds  # noqa: E402
from tests.data import realistic  # noqa: E402


@pytest.fixture(scope="module")
def stamps():
    return {s: b.index for s, b in realistic.universe().items()}


def test_plan_on_a_ragged_mixed_universe(stamps):
    plan = plan_folds(stamps, FoldsConfig(**realistic.FOLDS), horizon=5)
    starts = [f"{f.test_start:%Y-%m-%d}" for f in plan.folds]
    assert starts == ["2020-01-01", "2020-07-01", "2021-01-01", "2021-07-01", "2022-01-01"]
    assert plan.notes == ["folds: dropped the last test window, 2022-07-01 to 2022-07-20 23:00 (342 bars): "
                          "shorter than folds.min_test (half of folds.test 6M)"]
    sat = {f.index: dict(f.sat_out) for f in plan.folds}
    # Listed late and gone early: out until it has most of a year behind it.
    assert [k for k, out in sat.items() if "ACME_CUT" in out] == [0, 1]
    assert sat[1]["ACME_CUT"].startswith("too little history: 208 of about 251 bars in the training window from 2019-07-01")
    # The hourly series joins in June 2020: a full year of hours only by the fold of July 2021.
    assert [k for k, out in sat.items() if "EURUSD" in out] == [0, 1, 2]
    # Delisted in March 2021: trades in that fold until its last bar, then sits out.
    assert [k for k, out in sat.items() if "GONE" in out] == [3, 4]
    assert sat[3]["GONE"] == "no bars in the test window (its last bar is 2021-03-15)"
    assert plan.folds[2].takes_part("GONE") and not plan.folds[3].takes_part("GONE")
    # Each symbol's own calendar; the portfolio's is the union while its symbols all trade.
    figures = plan.folds[3].annualisation()
    assert (figures["ACME"], figures["BTC"], figures["EURUSD"]) == (251, 365, 6267)
    assert plan.folds[0].annualisation()["portfolio"] == 365  # ACME, BTC, GONE: BTC's days hold the others'
    assert 6300 < figures["portfolio"] < 6450  # hours 24x5, plus BTC's weekend days
    assert {s: c.periods_per_year for s, c in plan.calendars.items()}["ACME_CUT"] == 250


def test_bar_counts_over_mixed_calendars_are_refused(stamps):
    with pytest.raises(ConfigError, match=r"folds.train=504, folds.test=126 count bars, but the symbols' calendars "
                                          r"differ \(ACME: daily bars, 251 a year; .*BTC: daily bars, 365 a year; "
                                          r"EURUSD: 1h bars, 6267 a year\): give .* calendar spans"):
        plan_folds(stamps, FoldsConfig(), horizon=5)
    # One calendar, ragged histories: bar counts count that calendar's bars.
    same = {s: stamps[s] for s in ("ACME", "ACME_CUT", "GONE")}
    plan = plan_folds(same, FoldsConfig(train=250, test=125), horizon=5, periods_per_year=252)
    assert plan.folds[0].n_train == 245 and plan.folds[0].symbols == ("ACME", "GONE")
    assert set(plan.folds[0].annualisation().values()) == {252}  # the config's figure for all


def test_purge_and_embargo_count_each_symbols_own_bars(stamps):
    plan = plan_folds(stamps, FoldsConfig(train="1Y", test="6M", embargo=3), horizon=5)
    fold = plan.folds[4]
    for symbol in ("ACME", "BTC", "EURUSD"):
        own = stamps[symbol]
        mask = fold.symbol_train_mask(own)
        before = own[own < fold.test_start]
        assert own[mask][-1] == before[-6]  # the last 5 of its own bars before the test window are purged
        after = own[own > plan.folds[3].test_end][:3]
        assert not mask[own.isin(after)].any()  # its first 3 bars after an earlier window are embargoed
    union = realistic_union(stamps)
    np.testing.assert_array_equal(fold.symbol_train_mask(union), fold.train_mask(union))


def realistic_union(stamps):
    from dask_pipeline.calendars import union_of

    return union_of(stamps.values())


def test_min_test(stamps):
    kept = plan_folds(stamps, FoldsConfig(train="1Y", test="6M", min_test="2W"), horizon=5)
    assert len(kept.folds) == 6 and kept.notes == []
    idx = bars(1010)  # 500 train + 5 windows of 100 + 10 bars
    assert len(make_folds(idx, FoldsConfig(train=500, test=100), 5)) == 5
    assert len(make_folds(idx, FoldsConfig(train=500, test=100, min_test=10), 5)) == 6
    with pytest.raises(DataError, match="is shorter than folds.min_test .* and is the only one"):
        make_folds(pd.date_range("2020-01-01", "2021-01-20", tz="UTC"), FoldsConfig(train="1Y", test="6M"), 5)
    assert FoldsConfig(min_test="3m").min_test == "3M" and 0 < MIN_HISTORY < 1
