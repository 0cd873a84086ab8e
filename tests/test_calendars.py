"""Calendars inferred from timestamps: periods per year checked by hand for each calendar kind."""

import pandas as pd
import pytest

from dask_pipeline.calendars import alike, bar_size, describe_calendars, infer_calendar, union_of
from dask_pipeline.errors import DataError
from tests.data.realistic import exchange_days, fx_hours, seven_days


def test_seven_day_daily_is_365():
    # 731 days, 2019-01-01 .. 2020-12-31: 731 bars covering 731 days -> 731 * 365 / 731.
    cal = infer_calendar(pd.date_range("2019-01-01", "2020-12-31", freq="D", tz="UTC"))
    assert (cal.bars, cal.spacing, cal.periods_per_year) == (731, pd.Timedelta(days=1), 365)
    assert cal.describe() == "daily bars, 365 a year"


def test_weekdays_without_holidays_are_261():
    # 2019-01-01 (Tue) .. 2020-12-31 (Thu): 523 weekdays covering 730 + 1 days -> 523 * 365 / 731 = 261.1.
    cal = infer_calendar(pd.bdate_range("2019-01-01", "2020-12-31", tz="UTC"))
    assert (cal.bars, cal.periods_per_year) == (523, 261)


def test_exchange_days_are_about_252():
    # Less the 20 US federal holidays of 2019-2020 that fall on weekdays: 503 bars from
    # 2019-01-02 (New Year's Day is one) to 2020-12-31, covering 729 + 1 days -> 503 * 365 / 730 = 251.5.
    days = exchange_days("2019-01-01", "2020-12-31")
    assert len(days) == 503 and days[0] == pd.Timestamp("2019-01-02", tz="UTC")
    assert infer_calendar(days).periods_per_year == 252  # 251.5, rounded half to even


def test_hourly_around_the_clock_is_8760():
    # 365 days of hours, 8760 bars covering 8760 hours.
    cal = infer_calendar(pd.date_range("2021-01-01", periods=8760, freq="h", tz="UTC"))
    assert (cal.spacing, cal.periods_per_year) == (pd.Timedelta(hours=1), 8760)
    assert cal.describe() == "1h bars, 8760 a year"


def test_hourly_fx_five_days_a_week():
    # Sunday 22:00 .. Friday 21:00, 52 weeks from Sunday 2021-01-03 22:00: 120 bars a week,
    # 6240 bars covering 51 weeks + 5 days = 362 days -> 6240 * 365 / 362 = 6291.7; over
    # many years the trailing weekend matters less and it tends to 120 * 365 / 7 = 6257.
    hours = fx_hours("2021-01-03", "2021-12-31")
    hours = hours[hours >= pd.Timestamp("2021-01-03 22:00", tz="UTC")][:6240]
    assert infer_calendar(hours).periods_per_year == 6292
    assert abs(infer_calendar(fx_hours("2015-01-04", "2022-12-30")).periods_per_year - 6257) <= 5


def test_alike_and_description():
    stock, crypto = infer_calendar(exchange_days()), infer_calendar(seven_days())
    late = infer_calendar(exchange_days("2020-03-01"))
    assert alike([stock, late]) and not alike([stock, crypto]) and alike([crypto])
    assert not alike([stock, infer_calendar(fx_hours())])
    text = describe_calendars({"A": stock, "B": late, "C": crypto})
    assert text.startswith("A: daily bars") and "C: daily bars, 365 a year" in text
    assert bar_size(pd.Timedelta(minutes=5)) == "5min" and bar_size(pd.Timedelta(days=7)) == "7-day"


def test_too_few_bars_and_union():
    with pytest.raises(DataError, match="symbol X: 1 bar"):
        infer_calendar(pd.DatetimeIndex(["2020-01-01"], tz="UTC"), "symbol X")
    a = pd.date_range("2020-01-01", periods=3, tz="UTC")
    assert list(union_of([a[1:], a[:2]])) == list(a) and union_of([a]).name == "timestamp"
