"""Two user indicators, registered on import (``plugins: [examples.indicators]``).

Each is a plain function of one symbol's bars with numeric keyword defaults; the
decorator adds it to the one indicator registry, so ``features.indicators`` can name it
like a built-in (``- efficiency: {window: 20}``), its columns are cached, and every run
that uses it checks it for look-ahead first.
"""

from dask_pipeline.features import indicator


@indicator("efficiency", bounds={"window": (2, 1000)})
def efficiency(bars, window: int = 10):
    """Kaufman's efficiency ratio in [0, 1]: the net move of the last ``window`` bars over the path they took."""
    close = bars["close"]
    change = (close - close.shift(window)).abs()
    path = close.diff().abs().rolling(window).sum()
    return change / path


@indicator("donchian", outputs=("donchian_pos", "donchian_width"), bounds={"window": (2, 1000)})
def donchian(bars, window: int = 20):
    """Where the close sits in the high-low channel of the last ``window`` bars (0 = low, 1 = high), and
    the channel's width relative to the close."""
    high = bars["high"].rolling(window).max()
    low = bars["low"].rolling(window).min()
    width = high - low
    return bars.assign(donchian_pos=(bars["close"] - low) / width,
                       donchian_width=width / bars["close"])[["donchian_pos", "donchian_width"]]
