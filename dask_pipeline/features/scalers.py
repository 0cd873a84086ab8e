"""Feature scalers for models: fit on a training slice, apply to any slice.

A scaler learns one offset and one scale per column in ``fit`` and applies
``(X - offset) / scale`` in ``transform``. Statistics ignore NaN (a feature's
warm-up rows are NaN), NaN stays NaN, and a column with no spread (constant or
all-NaN) gets scale 1 so it never divides by zero.
"""

from __future__ import annotations

import warnings

import numpy as np


def _as_2d(X, where: str) -> np.ndarray:
    """``X`` as a 2-D float64 array, or a ValueError naming the caller."""
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{where}: expected a 2-D array (rows x columns), got {arr.ndim}-D")
    return arr


def _nan_reduce(func, arr: np.ndarray) -> np.ndarray:
    """Column-wise NaN-ignoring reduction; an all-NaN column gives NaN without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return func(arr, axis=0)


class Scaler:
    """Base scaler: subclasses define ``_fit_stats`` (offset, scale per column)."""

    def fit(self, X) -> "Scaler":
        """Learn per-column offset and scale from ``X`` (2-D, NaN ignored).

        Parameters
        ----------
        X : array-like, shape (n_rows, n_columns)

        Returns
        -------
        self
        """
        arr = _as_2d(X, f"{type(self).__name__}.fit")
        offset, scale = self._fit_stats(arr)
        offset = np.where(np.isfinite(offset), offset, 0.0)
        # No spread (constant or all-NaN column): scale 1 so transform only shifts.
        scale = np.where(np.isfinite(scale) & (scale > 0.0), scale, 1.0)
        self.offset_ = offset
        self.scale_ = scale
        self.n_features_in_ = arr.shape[1]
        return self

    def transform(self, X) -> np.ndarray:
        """Apply the fitted offset/scale to ``X``; returns float32, NaN stays NaN."""
        if not hasattr(self, "scale_"):
            raise ValueError(f"{type(self).__name__} is not fitted: call fit() first")
        arr = _as_2d(X, f"{type(self).__name__}.transform")
        if arr.shape[1] != self.n_features_in_:
            raise ValueError(
                f"{type(self).__name__}.transform: fitted on {self.n_features_in_} columns, "
                f"got {arr.shape[1]}"
            )
        return ((arr - self.offset_) / self.scale_).astype(np.float32)

    def fit_transform(self, X) -> np.ndarray:
        """``fit(X).transform(X)``."""
        return self.fit(X).transform(X)

    def _fit_stats(self, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class StandardScaler(Scaler):
    """Zero mean, unit (population) standard deviation per column."""

    def _fit_stats(self, arr):
        return _nan_reduce(np.nanmean, arr), _nan_reduce(np.nanstd, arr)


class MinMaxScaler(Scaler):
    """Maps each column's training range to [0, 1] (values outside it fall outside)."""

    def _fit_stats(self, arr):
        lo = _nan_reduce(np.nanmin, arr)
        hi = _nan_reduce(np.nanmax, arr)
        return lo, hi - lo


class IdentityScaler(Scaler):
    """No scaling; only casts to float32 (``kind: none``)."""

    def _fit_stats(self, arr):
        n = arr.shape[1]
        return np.zeros(n), np.ones(n)


SCALERS: dict[str, type[Scaler]] = {
    "standard": StandardScaler,
    "minmax": MinMaxScaler,
    "none": IdentityScaler,
}


def make_scaler(kind: str) -> Scaler:
    """A new, unfitted scaler by name: ``"standard"``, ``"minmax"`` or ``"none"``."""
    try:
        return SCALERS[kind]()
    except KeyError:
        raise ValueError(
            f"unknown scaler {kind!r}; expected one of {', '.join(sorted(SCALERS))}"
        ) from None
