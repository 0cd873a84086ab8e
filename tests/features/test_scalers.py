"""Scalers: fit on a training slice only, apply anywhere; NaN-aware; constant columns."""

from __future__ import annotations

import numpy as np
import pytest

from dask_pipeline.features.scalers import make_scaler


@pytest.fixture
def panel():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(5.0, 2.0, 400), rng.uniform(-1.0, 3.0, 400), np.full(400, 7.0)])
    X[:20, 0] = np.nan  # warm-up rows of a feature
    return X


def test_standard_fits_the_train_slice_only(panel):
    train, test = panel[:300], panel[300:]
    scaler = make_scaler("standard").fit(train)
    np.testing.assert_allclose(scaler.offset_[:2], np.nanmean(train[:, :2], axis=0))
    np.testing.assert_allclose(scaler.scale_[:2], np.nanstd(train[:, :2], axis=0))
    out = scaler.transform(test)
    assert out.dtype == np.float32 and out.shape == test.shape
    np.testing.assert_allclose(out[:, :2], (test[:, :2] - scaler.offset_[:2]) / scaler.scale_[:2], rtol=1e-6)
    # fitted on train: train is standardised, test is not exactly
    z = scaler.transform(train)
    np.testing.assert_allclose(np.nanmean(z[:, :2], axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.nanstd(z[:, :2], axis=0), 1.0, atol=1e-5)
    # refitting on other data changes nothing about an earlier fit's parameters' origin
    other = make_scaler("standard").fit(test)
    assert not np.allclose(other.offset_, scaler.offset_)


def test_minmax_maps_train_range_to_unit_interval(panel):
    train = panel[:300]
    out = make_scaler("minmax").fit(train).transform(train)
    np.testing.assert_allclose(np.nanmin(out[:, :2], axis=0), 0.0, atol=1e-7)
    np.testing.assert_allclose(np.nanmax(out[:, :2], axis=0), 1.0, atol=1e-6)
    beyond = make_scaler("minmax").fit(train).transform(panel[300:] * 10)
    assert np.nanmax(beyond[:, 0]) > 1.0  # values outside the train range are not clipped


@pytest.mark.parametrize("kind", ["standard", "minmax"])
def test_constant_and_all_nan_columns_get_scale_one(kind, panel):
    X = panel.copy()
    X[:, 1] = np.nan
    scaler = make_scaler(kind).fit(X)
    assert scaler.scale_[2] == 1.0 and scaler.scale_[1] == 1.0
    out = scaler.transform(X)
    assert np.all(out[:, 2] == 0.0)  # shifted by the constant, no division by zero
    assert np.isnan(out[:, 1]).all() and np.isnan(out[:20, 0]).all()
    assert np.isfinite(out[20:, 0]).all()


def test_none_only_casts(panel):
    out = make_scaler("none").fit(panel).transform(panel)
    np.testing.assert_array_equal(out, panel.astype(np.float32))


def test_errors():
    with pytest.raises(ValueError, match="unknown scaler 'robust'; expected one of minmax, none, standard"):
        make_scaler("robust")
    with pytest.raises(ValueError, match="not fitted"):
        make_scaler("standard").transform(np.ones((2, 2)))
    with pytest.raises(ValueError, match="2-D"):
        make_scaler("standard").fit(np.ones(3))
    with pytest.raises(ValueError, match="fitted on 2 columns, got 3"):
        make_scaler("minmax").fit(np.ones((4, 2))).transform(np.ones((4, 3)))


def test_learned_attributes_only_after_fit():
    scaler = make_scaler("standard")
    assert not hasattr(scaler, "offset_") and not hasattr(scaler, "scale_")
