"""Typed run configuration: YAML -> validated pydantic models, presets, profiles, overrides.

A config is validated completely at load, before anything starts: an unknown key fails
with its dotted path and the closest valid name, a bad value names the key, the value
and what is allowed. Deeper code receives these typed objects, never raw dicts.

Layering, lowest first: the section defaults, the preset file (``preset: NAME`` ->
``configs/presets/NAME.yaml``), the profile file (``profile: NAME`` ->
``configs/profiles/NAME.yaml``, usually a cluster profile), the config file itself, and
last the ``-o key.path=value`` overrides.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from dask_pipeline.backtest import BacktestConfig
from dask_pipeline.errors import ConfigError
from dask_pipeline.features.spec import FeaturesConfig
from dask_pipeline.folds import FoldsConfig
from dask_pipeline.models import LabelConfig, ModelConfig
from dask_pipeline.monitor import MonitorConfig
from dask_pipeline.schema import DateText, Section
from dask_pipeline.waves.spec import WavesConfig
from dask_pipeline.tuning import TuneConfig

#: Where presets and profiles are found when the config file's own folder has none:
#: the repository's ``configs/`` (present for a source checkout / editable install).
REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"

LAYER_KEYS = {"preset": "presets", "profile": "profiles"}


class SynthConfig(Section):
    """A synthetic market generated into ``data.root`` when that store does not exist yet."""

    symbols: int = Field(8, ge=1, le=10_000)
    start: DateText = "2016-01-01"
    end: DateText = "2023-12-29"
    freq: Literal["1D", "1h", "5min"] = "1D"
    seed: int = 7


class DataConfig(Section):
    """Where the bars live and which of them a run reads."""

    root: str = "data/quickstart"
    symbols: list[str] | None = None
    start: DateText | None = None
    end: DateText | None = None
    dtype: Literal["float32", "float64"] = "float32"
    synthetic: SynthConfig | None = None

    @field_validator("start", "end")
    @classmethod
    def _is_timestamp(cls, value: str | None) -> str | None:
        if value is not None:
            import pandas as pd

            try:
                pd.Timestamp(value)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{value!r} is not a date (expected e.g. 2020-01-31)") from exc
        return value

    @field_validator("symbols")
    @classmethod
    def _unique_symbols(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("is empty; leave it out to use every symbol in the store")
            dupes = sorted({s for s in value if value.count(s) > 1})
            if dupes:
                raise ValueError(f"lists {', '.join(dupes)} more than once")
        return value


class ClusterConfig(Section):
    """How to get a Dask cluster (see ``dask_pipeline.cluster``)."""

    kind: Literal["local", "local-cuda", "address", "ssh", "slurm", "kubernetes"] = "local"
    n_workers: int | None = Field(None, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str | None = "auto"
    address: str | None = None
    dashboard: bool = True
    dashboard_address: str = "127.0.0.1:8787"

    @model_validator(mode="after")
    def _address_given(self) -> ClusterConfig:
        if self.address is not None and self.kind != "address":
            raise ValueError(f"address is only used with kind 'address' (kind is {self.kind!r})")
        if self.address is not None and "://" not in self.address:
            raise ValueError(
                f"address {self.address!r} has no protocol; expected tcp://HOST:PORT or tls://HOST:PORT"
            )
        return self


class OutputConfig(Section):
    """Where results go: ``<dir>/<run_name>/``."""

    dir: str = "results"
    run_name: str | None = None


class Config(Section):
    """A whole run: which graph, on which data, with which stages, on which cluster."""

    graph: str = "datacheck"
    seed: int = 0
    data: DataConfig = DataConfig()
    features: FeaturesConfig = FeaturesConfig()
    label: LabelConfig = LabelConfig()
    folds: FoldsConfig = FoldsConfig()
    model: ModelConfig = ModelConfig()
    backtest: BacktestConfig = BacktestConfig()
    waves: WavesConfig = WavesConfig()
    tune: TuneConfig = TuneConfig()
    cluster: ClusterConfig = ClusterConfig()
    output: OutputConfig = OutputConfig()
    monitor: MonitorConfig = MonitorConfig()

    @field_validator("graph")
    @classmethod
    def _known_graph(cls, value: str) -> str:
        from dask_pipeline.graph import graph_names

        if value not in graph_names():
            raise ValueError(f"unknown graph{_did_you_mean(value, graph_names())}; known: {', '.join(graph_names())}")
        return value

    @model_validator(mode="after")
    def _model_fits_task(self) -> Config:
        from dask_pipeline.models import check_task

        try:
            check_task(self.model.name, self.label.task)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if self.folds.purge is not None and self.folds.purge < self.label.horizon:
            raise ValueError(
                f"folds.purge {self.folds.purge} is shorter than label.horizon {self.label.horizon}: "
                "training labels would read bars of the test window"
            )
        return self

    @model_validator(mode="after")
    def _tune_space_applies(self) -> Config:
        # Every tune.space path must be a key whose type takes the distribution's values.
        from dask_pipeline.tuning import check_space

        check_space(self)
        return self

    @property
    def run_dir(self) -> Path:
        """The results folder of this run."""
        return Path(self.output.dir) / (self.output.run_name or "run")

    @property
    def checkpoint_dir(self) -> Path:
        """Where fold and trial checkpoints of this exact config live (see ``graph.checkpointed``)."""
        return self.run_dir / "checkpoints" / self.digest()

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (what ``config.yaml`` holds)."""
        return self.model_dump(mode="json")

    def digest(self) -> str:
        """A stable hash of everything that defines the results.

        Left out: where and how it runs (cluster, output, monitor) and the feature cache
        settings, which change where features are kept, not what they are.
        """
        data = self.to_dict()
        for key in ("cluster", "output", "monitor"):
            data.pop(key, None)
        for key in ("cache", "cache_dir"):
            data["features"].pop(key)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Load, layer and validate a config.

    Parameters
    ----------
    path
        A YAML file, or None for the defaults.
    overrides
        ``["key.path=value", ...]`` (values parsed as YAML) or a ``{"key.path": value}`` dict.

    Returns
    -------
    Config
        Fully validated; relative paths resolved against the current directory.
    """
    source = str(path) if path is not None else "<defaults>"
    raw: dict[str, Any] = {}
    search: list[Path] = [REPO_CONFIGS]
    if path is not None:
        path = Path(path)
        raw = _read_yaml(path)
        search = [path.parent, path.parent.parent, REPO_CONFIGS]

    layered: dict[str, Any] = {}
    extra = _parse_overrides(overrides)
    for key, folder in LAYER_KEYS.items():
        name = raw.pop(key, None)
        name = extra.pop(key, name)  # `-o preset=blank` replaces the file's preset
        if name is not None:
            layered = _deep_merge(layered, _read_layer(key, folder, name, search, source))
    merged = _deep_merge(layered, raw)
    for dotted, value in extra.items():
        try:
            set_dotted(merged, dotted, value)
        except ConfigError as exc:
            raise ConfigError(f"override {dotted}: {exc}") from None
    merged.setdefault("output", {})
    if path is not None and isinstance(merged["output"], dict):
        merged["output"].setdefault("run_name", path.stem)

    try:
        cfg = Config.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + "; ".join(_describe(err) for err in exc.errors())) from None
    return _resolve_paths(cfg)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where}: not valid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top, got {type(data).__name__}")
    return data


def _read_layer(key: str, folder: str, name: Any, search: list[Path], source: str) -> dict[str, Any]:
    if not isinstance(name, str):
        raise ConfigError(f"{source}: key '{key}': expected a name, got {name!r}")
    dirs = [d / folder for d in search if (d / folder).is_dir()]
    for d in dirs:
        candidate = d / f"{name}.yaml"
        if candidate.is_file():
            layer = _read_yaml(candidate)
            if key in layer:
                raise ConfigError(f"{candidate}: a {key} file cannot name another {key}")
            return layer
    known = sorted({p.stem for d in dirs for p in d.glob("*.yaml")})
    raise ConfigError(f"{source}: key '{key}': unknown {key} {name!r}{_did_you_mean(name, known)}; known: {', '.join(known) or 'none'}")


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _parse_overrides(overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    if overrides is None:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key.path=value, e.g. cluster.n_workers=4")
        try:
            parsed[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            parsed[key.strip()] = text
    return parsed


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``dotted = "a.b.c"``, creating sections on the way.

    Raises ``ConfigError`` when a prefix of the path holds a value rather than a section.
    """
    parts = dotted.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])} is a value ({child!r}), not a section")
        node = child
    node[parts[-1]] = value


def _describe(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    # Tagged/union validators add the member type name to the location; keep the config path.
    message = err["msg"].removeprefix("Value error, ")
    if not loc:  # a check across sections: its message names the keys itself
        return message
    dotted = ".".join(loc)
    if err["type"] == "extra_forbidden":
        valid = _valid_names(err["loc"][:-1])
        hint = _did_you_mean(loc[-1], valid)
        return f"unknown key '{dotted}'{hint}" if hint else f"unknown key '{dotted}' (valid: {', '.join(valid)})"
    if err["type"] in ("missing",):
        return f"'{dotted}': required key is missing"
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"'{dotted}': {message}{shown}"


def _valid_names(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the section at ``loc`` in the Config tree."""
    model: Any = Config
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _model_of(field.annotation)
        if model is None:
            return []
    return sorted(getattr(model, "model_fields", {}))


def _model_of(annotation: Any) -> Any:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _did_you_mean(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _resolve_paths(cfg: Config) -> Config:
    def absolute(p: str) -> str:
        return p if "://" in p else str(Path(p).expanduser().resolve())

    data = cfg.data.model_copy(update={"root": absolute(cfg.data.root)})
    features = cfg.features.model_copy(update={"cache_dir": absolute(cfg.features.cache_dir)})
    output = cfg.output.model_copy(update={"dir": absolute(cfg.output.dir)})
    return cfg.model_copy(update={"data": data, "features": features, "output": output})


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
