"""A universe of real-shaped market data for tests: ragged histories, mixed calendars, price-only bars.

Real third-party data, generated (nothing is downloaded):

- ``ACME``: a stock on exchange days (weekdays less the US federal holidays), 2019-01-02 ..
  ``END``, with volume;
- ``ACME_CUT``: the same bars cut at both ends (listed late, gone early): 2019-09-03 ..
  2022-03-31;
- ``BTC``: a 7-day daily series (weekends included), with volume;
- ``EURUSD``: hourly FX bars, 24 hours a day from Sunday 22:00 to Friday 22:00 UTC, price
  only (no volume), from 2020-06-01;
- ``GONE``: a stock delisted mid-sample, on 2021-03-15.

``universe()`` gives the bars; ``write_csvs`` writes them as a pandas user would
(``DataFrame.to_csv()``: an unnamed first column of timestamps; no volume column for
price-only bars); ``write_long_csv`` writes the long format. Later tests reuse these.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pandas.tseries.holiday import USFederalHolidayCalendar

START, END = "2019-01-01", "2022-07-20"
SYMBOLS = ("ACME", "ACME_CUT", "BTC", "EURUSD", "GONE")
CUT = ("2019-09-03", "2022-03-31")
FX_START = "2020-06-01"
DELISTED = "2021-03-15"

#: Walk-forward folds that fit this universe: calendar spans (bar counts are refused over
#: mixed calendars). Test windows 2020-01 .. 2022-06 tile the data; the last, 2022-07-01 ..
#: 2022-07-20, is under half of 6 months and is dropped.
FOLDS = {"train": "1Y", "test": "6M"}
#: A feature set without the volume indicators (EURUSD is price-only).
INDICATORS = ["ret", "zscore", "rsi", "natr", "macd"]


def exchange_days(start: str = START, end: str = END) -> pd.DatetimeIndex:
    """Weekdays less the US federal holidays, at midnight UTC."""
    days = pd.bdate_range(start, end, tz="UTC", name="timestamp")
    holidays = USFederalHolidayCalendar().holidays(start, end).tz_localize("UTC")
    return days[~days.isin(holidays)]


def seven_days(start: str = START, end: str = END) -> pd.DatetimeIndex:
    """Every day, weekends included (crypto), at midnight UTC."""
    return pd.date_range(start, end, freq="D", tz="UTC", name="timestamp")


def fx_hours(start: str = FX_START, end: str = END) -> pd.DatetimeIndex:
    """Hourly bars around the clock, Sunday 22:00 to Friday 21:00 UTC (24 x 5)."""
    hours = pd.date_range(start, pd.Timestamp(end) + pd.Timedelta(hours=23), freq="h", tz="UTC", name="timestamp")
    week_hour = hours.day_of_week * 24 + hours.hour  # Monday 00:00 = 0
    open_ = (week_hour < 4 * 24 + 22) | (week_hour >= 6 * 24 + 22)  # until Friday 22:00, from Sunday 22:00
    return hours[open_]


def walk(index: pd.DatetimeIndex, seed: int, vol: float, price: float, volume: bool = True) -> pd.DataFrame:
    """Random-walk bars on ``index``: open at the last close, wicks around the body, volume if asked."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, vol, len(index))
    close = price * np.exp(np.cumsum(r))
    open_ = np.concatenate([[price], close[:-1]])
    wick = np.abs(rng.normal(0, vol / 2, (2, len(index))))
    bars = pd.DataFrame({
        "open": open_, "high": np.maximum(open_, close) * (1 + wick[0]), "low": np.minimum(open_, close) * (1 - wick[1]),
        "close": close, "volume": np.round(rng.lognormal(13, 0.4, len(index))) if volume else np.nan,
    }, index=index)
    return bars


def universe(seed: int = 0) -> dict[str, pd.DataFrame]:
    """The five symbols' bars (float64, UTC index named ``timestamp``)."""
    acme = walk(exchange_days(), seed, 0.015, 100.0)
    return {
        "ACME": acme,
        "ACME_CUT": acme.loc[CUT[0]:CUT[1]],
        "BTC": walk(seven_days(), seed + 1, 0.035, 4000.0),
        "EURUSD": walk(fx_hours(), seed + 2, 0.0008, 1.1, volume=False),
        "GONE": walk(exchange_days(end=DELISTED), seed + 3, 0.02, 30.0),
    }


def write_csvs(bars: dict[str, pd.DataFrame], folder: Path) -> Path:
    """One CSV per symbol as ``DataFrame.to_csv()`` writes it: the index as an unnamed first column,
    naive timestamps (UTC), no volume column for price-only bars."""
    folder.mkdir(parents=True, exist_ok=True)
    for symbol, frame in bars.items():
        out = frame.drop(columns="volume") if frame["volume"].isna().all() else frame
        out = out.set_axis(out.index.tz_localize(None).rename(None))
        out.to_csv(folder / f"{symbol}.csv")
    return folder


def write_long_csv(bars: dict[str, pd.DataFrame], path: Path) -> Path:
    """Every symbol in one long CSV: ``timestamp, symbol, open, high, low, close, volume``, in time order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    long = pd.concat([f.assign(symbol=s) for s, f in bars.items()]).reset_index()
    long = long.sort_values(["timestamp", "symbol"], kind="stable")
    long[["timestamp", "symbol", "open", "high", "low", "close", "volume"]].to_csv(path, index=False)
    return path
