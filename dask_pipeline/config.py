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
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from dask_pipeline.backtest import BacktestConfig
from dask_pipeline.cluster_spec import (LOOPBACK_HOSTS, SCALE_OUT_KINDS, ClusterConfig, KubernetesConfig,  # noqa: F401
                                       SlurmConfig, SSHConfig, TLSConfig)
from dask_pipeline.configfile import parse_yaml, read_yaml
from dask_pipeline.errors import ConfigError
from dask_pipeline.features.spec import FeaturesConfig
from dask_pipeline.folds import FoldsConfig
from dask_pipeline.models import LabelConfig, ModelConfig
from dask_pipeline.monitor import MonitorConfig
from dask_pipeline.redaction import redact  # noqa: F401  (imported from here by runner and tests)
from dask_pipeline.schema import (DateText, Section, describe_error, did_you_mean, dump_config,  # noqa: F401
                                  set_dotted)
from dask_pipeline.waves.spec import WavesConfig
from dask_pipeline.tuning.space import TuneConfig

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
    seed: int = Field(7, ge=0)

    @model_validator(mode="after")
    def _has_bars(self) -> SynthConfig:
        from dask_pipeline.data.synth import bar_calendar

        try:
            index, _ = bar_calendar(self.start, self.end, self.freq)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"start {self.start!r} / end {self.end!r}: {exc} (expected dates such as 2020-01-31)"
            ) from None
        if len(index) == 0:
            raise ValueError(f"start {self.start} to end {self.end} holds no business day: nothing to generate")
        return self


class DataConfig(Section):
    """Where the bars live and which of them a run reads.

    ``root`` is a local path (relative ones are taken from the current directory) or an
    fsspec URL such as ``s3://bucket/bars``, ``gs://bucket/bars`` or ``file:///data/bars``;
    its credentials and endpoint come from the environment, never from the config.
    """

    root: str = "data/quickstart"
    symbols: list[str] | None = None
    start: DateText | None = None
    end: DateText | None = None
    dtype: Literal["float32", "float64"] = "float32"
    synthetic: SynthConfig | None = None

    @field_validator("root")
    @classmethod
    def _is_path_or_url(cls, value: str) -> str:
        from dask_pipeline.data.location import check_url, is_url

        if not value.strip():
            raise ValueError("is empty; expected a directory or a URL such as s3://bucket/bars")
        if is_url(value):
            check_url(value)
        return value

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
            from collections import Counter

            dupes = sorted(s for s, n in Counter(value).items() if n > 1)
            if dupes:
                raise ValueError(f"lists {', '.join(dupes)} more than once")
        return value


class OutputConfig(Section):
    """Where results go: ``<dir>/<run_name>/``."""

    dir: str = "results"
    #: A plain folder name (default: the config file's name); never a path, so a run stays in ``dir``.
    run_name: str | None = None

    @field_validator("run_name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is None:
            return value
        # A leading dot would hide the folder and could collide with a run's staging folders.
        if (not value.strip() or value in (".", "..") or value.startswith(".") or any(c in value for c in "/\\")
                or not value.isprintable() or len(value.encode()) > 200):
            raise ValueError(
                f"{value!r} is not a plain folder name (it names the folder <output.dir>/<run_name>: no '/' or "
                "'\\', no leading '.', printable, at most 200 bytes); by default it is the config file's name"
            )
        return value


class Config(Section):
    """A whole run: which graph, on which data, with which stages, on which cluster."""

    #: Modules imported here and on every worker before the graph is built (user
    #: indicators, estimators); listed first, so what they register validates below.
    plugins: list[str] = []
    graph: str = "datacheck"
    seed: int = Field(0, ge=0)  # numpy seeds are non-negative
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

    @field_validator("plugins")
    @classmethod
    def _import_plugins(cls, value: list[str]) -> list[str]:
        from dask_pipeline.usercode import import_module, is_file_path

        for name in value:
            if is_file_path(name):
                raise ValueError(f"{name!r} is a file; plugins are modules by dotted name "
                                 "(mylab.indicators), importable here and on every worker (see README, "
                                 "'Extending dask-pipeline', for getting a single file to the workers)")
            try:
                import_module(name)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        dupes = sorted({n for n in value if value.count(n) > 1})
        if dupes:
            raise ValueError(f"lists {', '.join(dupes)} more than once")
        return value

    @field_validator("graph")
    @classmethod
    def _known_graph(cls, value: str) -> str:
        # A shipped name is checked by name (importing tune would load Optuna); user code is
        # imported, so a missing module, file or build() fails at load.
        from dask_pipeline.graph import graph_names, load_graph
        from dask_pipeline.usercode import is_file_path

        if value in graph_names():
            return value
        try:
            load_graph(value, key=None)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return str(Path(value).expanduser().resolve()) if is_file_path(value) else value

    @model_validator(mode="after")
    def _model_fits_task(self) -> Config:
        from dask_pipeline.models import check_task

        try:
            check_task(self.model.name, self.label.task, self.model.params)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if self.folds.purge is not None and self.folds.purge < self.label.horizon:
            raise ValueError(
                f"folds.purge {self.folds.purge} is shorter than label.horizon {self.label.horizon}: "
                "training labels would read bars of the test window"
            )
        return self

    @model_validator(mode="after")
    def _dates_in_order(self) -> Config:
        # An inverted range is a typo, not a request for a run over no bars.
        import pandas as pd

        start, end = self.data.start, self.data.end
        if start is None or end is None:
            return self
        first, last = (pd.Timestamp(v) for v in (start, end))
        first, last = (t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC") for t in (first, last))
        if last == last.normalize():  # an end without a time of day covers that whole day
            last += pd.Timedelta(days=1) - pd.Timedelta(1, "ns")
        if last < first:
            raise ValueError(f"data.end {end} is before data.start {start}: the run would read no bars")
        return self

    @model_validator(mode="after")
    def _tune_space_applies(self) -> Config:
        # Every tune.space path must be a key whose type takes the distribution's values.
        from dask_pipeline.tuning.space import check_space

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
        code = _user_code(self)
        if code:  # user code defines results too: an edited indicator or graph is another digest
            data["code"] = code
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _user_code(cfg: Config) -> dict[str, str]:
    """Code identities of the run's user indicators and user graph (empty for shipped code only)."""
    from dask_pipeline.features.custom import user_indicators

    users = user_indicators()
    code = {f"indicator:{s.name}": users[s.name].code for s in cfg.features.indicators if s.name in users}
    if "." in cfg.graph or "/" in cfg.graph:
        from dask_pipeline.graph import load_graph
        from dask_pipeline.usercode import module_source

        code["graph"] = hashlib.sha256(module_source(load_graph(cfg.graph))).hexdigest()[:16]
    return code


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
        raw = read_yaml(path)
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
        raise ConfigError(f"{source}: " + "; ".join(describe_error(err, Config) for err in exc.errors())) from None
    return _resolve_paths(cfg, source)


def _read_layer(key: str, folder: str, name: Any, search: list[Path], source: str) -> dict[str, Any]:
    if not isinstance(name, str):
        raise ConfigError(f"{source}: key '{key}': expected a name, got {name!r}")
    dirs = [d / folder for d in search if (d / folder).is_dir()]
    for d in dirs:
        candidate = d / f"{name}.yaml"
        if candidate.is_file():
            layer = read_yaml(candidate)
            if key in layer:
                raise ConfigError(f"{candidate}: a {key} file cannot name another {key}")
            return layer
    known = sorted({p.stem for d in dirs for p in d.glob("*.yaml")})
    raise ConfigError(f"{source}: key '{key}': unknown {key} {name!r}{did_you_mean(name, known)}; known: {', '.join(known) or 'none'}")


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
            parsed[key.strip()] = parse_yaml(text) if text.strip() else None
        except yaml.YAMLError:
            parsed[key.strip()] = text
    return parsed


def _resolve_paths(cfg: Config, source: str = "<defaults>") -> Config:
    def absolute(p: str) -> str:
        return p if "://" in p else str(Path(p).expanduser().resolve())

    data = cfg.data.model_copy(update={"root": _absolute_root(cfg.data.root)})
    features = cfg.features.model_copy(update={"cache_dir": absolute(cfg.features.cache_dir)})
    output = cfg.output.model_copy(update={"dir": absolute(cfg.output.dir)})
    if features.cache and "://" not in features.cache_dir:
        _check_folder(Path(features.cache_dir), "features.cache_dir", source)
    return cfg.model_copy(update={"data": data, "features": features, "output": output})


def _check_folder(path: Path, key: str, source: str) -> None:
    """``ConfigError`` naming ``key`` when ``path``, or the first of its parents that exists, is not a folder."""
    for existing in (path, *path.parents):
        if existing.exists():
            if not existing.is_dir():
                raise ConfigError(f"{source}: '{key}': {existing} is a file, not a folder "
                                  f"(expected a folder at {path})")
            return


def _absolute_root(root: str) -> str:
    """``data.root`` as every worker must read it: a local path made absolute; a URL kept,
    except that a ``file://`` URL's path is made absolute too (workers run in other directories)."""
    scheme, sep, rest = root.partition("://")
    if not sep:
        return str(Path(root).expanduser().resolve())
    if scheme in ("file", "local") and "::" not in root:
        return f"{scheme}://{Path(rest).expanduser().resolve()}"
    return root
