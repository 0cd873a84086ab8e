"""Typed feature configuration: which indicators, with which parameters, cached where.

``IndicatorSpec`` accepts the long form ``{name: sma, params: {window: 20}}``, the short
YAML form ``- sma: {window: 20}`` and a bare name (``- obv``). Parameters are checked
against the indicator registry at load and completed with defaults, so a loaded spec
always carries every parameter, in declared order. Keys such as ``features.rsi.window``
name a listed indicator by its registry name (``features.address``).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from dask_pipeline.features.address import apply_addresses
from dask_pipeline.features.engine import DEFAULT_SET, INDICATORS, resolve_params
from dask_pipeline.schema import Section


class IndicatorSpec(Section):
    """One indicator of the feature set: a registry name and its parameters."""

    name: str
    params: dict[str, int | float] = {}

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"name": data}
        elif isinstance(data, dict) and len(data) == 1 and not {"name", "params"} & data.keys():
            ((name, params),) = data.items()
            data = {"name": name, "params": {} if params is None else params}
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            params = data.get("params")
            params = {} if params is None else params
            if not isinstance(params, dict):
                raise ValueError(
                    f"params of {data['name']!r} must be a mapping such as {{window: 20}}, "
                    f"got {params!r}"
                )
            data = {**data, "params": resolve_params(data["name"], params)}
        return data

    @property
    def columns(self) -> list[str]:
        """The feature columns this indicator produces, e.g. ``["sma_20"]``."""
        return INDICATORS[self.name].columns(self.params)


DEFAULT_INDICATORS: list[IndicatorSpec] = [
    IndicatorSpec(name=name, params=params) for name, params in DEFAULT_SET
]


class FeaturesConfig(Section):
    """The ``features`` section: indicators, the cache, and the benchmark symbol."""

    indicators: list[IndicatorSpec] = Field(default_factory=lambda: list(DEFAULT_INDICATORS))
    cache: bool = True
    cache_dir: str = ".cache/features"
    benchmark: str | None = None  # symbol whose returns feed corr/beta

    @model_validator(mode="before")
    @classmethod
    def _addressed(cls, data: Any) -> Any:
        # features.<indicator>.<param> / .enabled keys, applied to the list before it is validated.
        return apply_addresses(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _consistent(self) -> "FeaturesConfig":
        if not self.indicators:
            raise ValueError("indicators is empty; name at least one, or omit it for the default set")
        seen: dict[str, int] = {}
        for position, spec in enumerate(self.indicators):
            for column in spec.columns:
                if column in seen:
                    raise ValueError(
                        f"indicators.{position} repeats {column!r} "
                        f"(already produced by indicators.{seen[column]})"
                    )
                seen[column] = position
        needy = sorted({s.name for s in self.indicators if INDICATORS[s.name].needs_benchmark})
        if needy and self.benchmark is None:
            raise ValueError(
                f"indicators {', '.join(needy)} compare returns with a benchmark; "
                "set benchmark to its symbol"
            )
        return self
