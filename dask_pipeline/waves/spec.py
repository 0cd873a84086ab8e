"""The ``waves`` config section: how the Elliott-wave scan finds, filters and scores patterns.

Every field has a default, so ``WavesConfig()`` is a usable scan. Validators raise
``ValueError`` with the reason; the config loader prefixes the dotted key
(``'waves.up_to': must be at least 1 ...``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from dask_pipeline.schema import Section

#: Pivots of a 5-wave impulse: its start and the ends of waves 1-5.
IMPULSE_PIVOTS = 6


class PreScoreWeights(Section):
    """Weights of the window pre-score components (each component lies in [0, 1])."""

    pivots: float = Field(0.25, ge=0)
    range: float = Field(0.25, ge=0)
    volatility: float = Field(0.25, ge=0)
    trend: float = Field(0.25, ge=0)

    @model_validator(mode="after")
    def _not_all_zero(self) -> PreScoreWeights:
        if sum(self.model_dump().values()) <= 0:
            raise ValueError("all weights are 0; give at least one component a positive weight")
        return self


class ScoreWeights(Section):
    """Weights of the impulse sub-scores in ``score`` (normalised to sum to 1)."""

    wave2: float = Field(0.2, ge=0)
    wave3: float = Field(0.25, ge=0)
    wave4: float = Field(0.2, ge=0)
    wave5: float = Field(0.2, ge=0)
    time: float = Field(0.15, ge=0)

    @model_validator(mode="after")
    def _not_all_zero(self) -> ScoreWeights:
        if sum(self.model_dump().values()) <= 0:
            raise ValueError("all weights are 0; give at least one sub-score a positive weight")
        return self


class ScoreTolerances(Section):
    """Relative tolerance of each Fibonacci target: a ratio ``tol * target`` away scores 0.5."""

    wave2: float = Field(0.15, gt=0)
    wave3: float = Field(0.15, gt=0)
    wave4: float = Field(0.25, gt=0)
    wave5: float = Field(0.15, gt=0)
    time: float = Field(0.35, gt=0)
    correction: float = Field(0.2, gt=0)


class WavesConfig(Section):
    """The ``waves`` section: pivots, windows, candidate enumeration, scoring, top-k, backend.

    Pivots come from a zigzag over highs and lows that reverses after ``pivot_threshold``
    (a fraction of price with ``pivot_mode: percent``, a multiple of the ``atr_period``
    ATR with ``pivot_mode: atr``). Windows of ``window_bars`` bars slide with
    ``window_overlap_ratio`` overlap; the most recent ``max_windows`` are scanned, those
    with fewer than 6 pivots, a pre-score under ``pre_score_threshold`` or (with
    ``skip_flat_windows``) a trend under ``flat_trend`` are skipped. In each window up
    to ``max_start_points`` start pivots per direction begin candidate impulses whose
    waves each end at one of the next ``up_to`` pivots of the right kind; at most
    ``max_combinations`` candidates per window are evaluated.
    """

    window_bars: int = 500
    window_overlap_ratio: float = Field(0.5, ge=0.0, lt=1.0)
    max_windows: int = Field(2000, ge=1)
    pivot_mode: Literal["atr", "percent"] = "atr"
    pivot_threshold: float = Field(3.0, gt=0.0)
    atr_period: int = Field(14, ge=1)
    skip_flat_windows: bool = True
    flat_trend: float = Field(0.1, ge=0.0, le=1.0)
    pre_score_threshold: float = Field(0.3, ge=0.0, le=1.0)
    pre_score_weights: PreScoreWeights = PreScoreWeights()
    up_to: int = 3
    max_start_points: int = Field(8, ge=1)
    max_combinations: int = Field(100_000, ge=1)
    scan_pattern_types: list[Literal["impulses", "corrections"]] = ["impulses"]
    score_weights: ScoreWeights = ScoreWeights()
    score_tolerances: ScoreTolerances = ScoreTolerances()
    top_k_per_window: int = Field(3, ge=1, le=1000)
    top_k_per_symbol: int = Field(100, ge=1)
    gpu_batch_size: int = Field(1 << 20, ge=1024)
    backend: Literal["auto", "cuda", "cupy", "numpy", "numba"] = "auto"

    @field_validator("window_bars")
    @classmethod
    def _window_holds_an_impulse(cls, value: int) -> int:
        if value < IMPULSE_PIVOTS:
            raise ValueError(
                f"a window of {value} bars cannot hold the {IMPULSE_PIVOTS} pivots of an impulse; "
                f"use at least {IMPULSE_PIVOTS} (typically hundreds)"
            )
        return value

    @field_validator("up_to")
    @classmethod
    def _up_to_positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(
                "must be at least 1: each wave ends at one of the next up_to pivots of its kind "
                "(1 = the next pivot, no skipped swings)"
            )
        if value > 16:
            raise ValueError("at most 16 (candidates grow as up_to**5 per start pivot)")
        return value

    @field_validator("scan_pattern_types")
    @classmethod
    def _impulses_first(cls, value: list[str]) -> list[str]:
        if "impulses" not in value:
            raise ValueError("must include 'impulses' (corrections are searched after an impulse)")
        if len(set(value)) != len(value):
            raise ValueError("lists a pattern type more than once")
        return value

    @model_validator(mode="after")
    def _threshold_in_range(self) -> WavesConfig:
        if self.pivot_mode == "percent" and self.pivot_threshold >= 1.0:
            raise ValueError(
                f"pivot_threshold {self.pivot_threshold} with pivot_mode 'percent' is a fraction of price "
                "and must be below 1 (0.05 = 5%)"
            )
        return self

    @property
    def corrections(self) -> bool:
        """Whether ABC corrections are searched after each reported impulse."""
        return "corrections" in self.scan_pattern_types
