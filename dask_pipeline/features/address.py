"""``features.<indicator>.<param>``: config keys that name a listed indicator by its registry name.

``features.indicators`` is a list, which a dotted override or a search space could only
index by position. These keys name an indicator instead, alike in a config file, in
``-o`` overrides and in ``tune.space``:

- ``features.rsi.window: 21`` sets the parameter ``window`` of the ``rsi`` in the list.
  An indicator listed more than once is named by its place among those of its name,
  from 0 (``features.sma.1.window``: the second ``sma``); without it the key is
  ambiguous and refused, with the keys that are not.
- ``features.rsi.enabled: false`` takes it out of the list; on an indicator that is not
  listed it changes nothing (it is off already). ``features.obv.enabled: true`` adds one
  that is not listed, at the end, with its default parameters (and those addressed
  beside it); on a listed one it changes nothing.
- A parameter of an indicator that is not listed is refused (list it, or enable it); one
  of an indicator the same keys disable is ignored, so a search over
  ``features.rsi.enabled`` and ``features.rsi.window`` together is valid.

Enabling and disabling come first, then parameters, in whatever order the keys are
given. The result is the plain list the config holds (``config.yaml`` shows it). User
indicators (``@features.indicator``) are addressed like built-ins; the keys of the
section itself (``indicators``, ``cache``, ``cache_dir``, ``benchmark``) are never
indicator names.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import PydanticCustomError

from dask_pipeline.features.engine import DEFAULT_SET, INDICATORS
from dask_pipeline.schema import did_you_mean

#: The keys of the ``features`` section; every other key of it addresses an indicator.
SECTION_KEYS = ("indicators", "cache", "cache_dir", "benchmark")
#: The key that toggles an indicator in or out (never an indicator parameter).
ENABLED = "enabled"
#: The error type of a key that names no indicator, parameter or instance (``tune.space`` checks it).
ADDRESS_ERROR = "feature_address"


def address_error(key: str, message: str) -> PydanticCustomError:
    """A validation error for the key ``features.<key>`` that names nothing (its message names the key)."""
    return PydanticCustomError(ADDRESS_ERROR, "{message}", {"message": f"'features.{key}': {message}"})


def apply_addresses(section: dict[str, Any]) -> dict[str, Any]:
    """The ``features`` section (raw mapping) with its indicator keys applied to ``indicators``.

    Returns the mapping unchanged when it has no such key; otherwise a copy whose
    ``indicators`` is a list of ``{name, params}`` entries and which holds no other key
    than ``SECTION_KEYS``.

    Raises
    ------
    PydanticCustomError
        Of type ``ADDRESS_ERROR`` for a key that names no indicator, parameter or
        instance, or that is ambiguous, naming the key (with did-you-mean) and the fix.
    ValueError
        For a parameter value of the wrong type or out of range, naming the key.
    """
    keys = [k for k in section if k not in SECTION_KEYS]
    if not keys:
        return section
    listed = section.get("indicators")
    if listed is None:
        listed = [{"name": name, "params": params} for name, params in DEFAULT_SET]
    entries = _entries(listed)
    if entries is None:  # not a list: the field's own validation says so
        return section
    toggles: list[tuple[str, int | None, bool]] = []
    settings: list[tuple[str, int | None, str, Any]] = []
    for name in keys:
        _collect(name, section[name], toggles, settings)

    removed: set[int] = set()
    for name, instance, on in toggles:
        where = f"{name}.{instance}.{ENABLED}" if instance is not None else f"{name}.{ENABLED}"
        found = _positions(entries, name)
        if on:
            if not found and instance in (None, 0):
                entries.append({"name": name, "params": {}})
            elif instance is not None and instance >= max(len(found), 1):
                raise address_error(where, _no_instance(name, instance, found, entries))
            elif instance is None and len(found) > 1:
                raise address_error(where, _ambiguous(name, ENABLED, found, entries))
            continue
        if instance is None:
            if len(found) > 1:
                raise address_error(where, _ambiguous(name, ENABLED, found, entries))
            removed.update(found)
        elif instance < len(found):
            removed.add(found[instance])
        elif found:
            raise address_error(where, _no_instance(name, instance, found, entries))

    for name, instance, param, value in settings:
        where = f"{name}.{instance}.{param}" if instance is not None else f"{name}.{param}"
        found = _positions(entries, name)
        if not found:
            if any(n == name and not on for n, _, on in toggles):
                continue  # disabled by these very keys: its parameters do not matter
            raise address_error(where, f"{name} is not in features.indicators; list it there, or add it with "
                                f"features.{name}.{ENABLED}: true (its other parameters take their defaults)")
        if instance is None and len(found) > 1:
            raise address_error(where, _ambiguous(name, param, found, entries))
        index = 0 if instance is None else instance
        if index >= len(found):
            raise address_error(where, _no_instance(name, index, found, entries))
        if found[index] in removed:
            continue
        try:
            coerced = INDICATORS[name].params[param].coerce(value, f"{name}.{param}")
        except ValueError as exc:
            raise ValueError(f"'features.{where}': {exc}") from None
        entry = entries[found[index]]
        entry["params"] = {**entry["params"], param: coerced}

    out = {k: v for k, v in section.items() if k in SECTION_KEYS}
    out["indicators"] = [e for i, e in enumerate(entries) if i not in removed]
    return out


def _collect(name: str, value: Any, toggles: list, settings: list) -> None:
    """Sort one indicator key's mapping into toggles and parameter settings, checking every name."""
    if name not in INDICATORS:
        hint = did_you_mean(str(name), [*SECTION_KEYS, *INDICATORS])
        raise address_error(str(name), f"unknown key{hint}; the features section takes {', '.join(SECTION_KEYS)}, "
                            "and an indicator's name to set its parameters (features.rsi.window: 21)")
    if not isinstance(value, dict):
        raise address_error(name, f"expected its parameters, e.g. features.{name}.{_example(name)}, or "
                            f"features.{name}.{ENABLED}: true|false; got {value!r}")
    for key, item in value.items():
        instance = _instance(key)
        if instance is None:
            _setting(name, None, key, item, toggles, settings)
            continue
        if not isinstance(item, dict):
            raise address_error(f"{name}.{key}", f"expected the parameters of the {_ordinal(instance)} {name} "
                                f"listed, e.g. features.{name}.{key}.{_example(name)}; got {item!r}")
        for param, setting in item.items():
            _setting(name, instance, param, setting, toggles, settings)


def _setting(name: str, instance: int | None, key: Any, value: Any, toggles: list, settings: list) -> None:
    where = f"{name}.{instance}.{key}" if instance is not None else f"{name}.{key}"
    if key == ENABLED:
        if not isinstance(value, bool):
            raise ValueError(f"'features.{where}': expected true or false, got {value!r}")
        toggles.append((name, instance, value))
        return
    params = INDICATORS[name].params
    if key not in params:
        valid = [*params, ENABLED]
        hint = did_you_mean(str(key), valid)
        raise address_error(where, f"{name} has no parameter {key!r}{hint}; valid: {', '.join(valid)}")
    settings.append((name, instance, key, value))


def _entries(listed: Any) -> list[dict[str, Any]] | None:
    """The listed indicators as ``{name, params}`` entries (copies); None when ``listed`` is not a list.

    An entry in none of the accepted forms is kept as it is: it names no indicator here,
    and validating the list reports it.
    """
    if not isinstance(listed, list | tuple):
        return None
    entries = []
    for item in listed:
        if isinstance(item, str):
            item = {"name": item, "params": {}}
        elif isinstance(item, dict) and len(item) == 1 and not {"name", "params"} & item.keys():
            ((name, params),) = item.items()
            item = {"name": name, "params": params}
        elif isinstance(item, dict):
            item = dict(item)
        elif isinstance(getattr(item, "name", None), str) and isinstance(getattr(item, "params", None), dict):
            item = {"name": item.name, "params": item.params}  # an IndicatorSpec
        if isinstance(item, dict) and isinstance(item.get("params"), dict | None):
            item["params"] = dict(item.get("params") or {})
        entries.append(item)
    return entries


def _positions(entries: list[Any], name: str) -> list[int]:
    return [i for i, e in enumerate(entries) if isinstance(e, dict) and e.get("name") == name]


def _instance(key: Any) -> int | None:
    """``key`` as the place of an instance (``0``, ``"1"``), or None for a parameter name."""
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key if key >= 0 else None
    if isinstance(key, str) and key.isdigit():
        return int(key)
    return None


def _ambiguous(name: str, param: str, found: list[int], entries: list[dict[str, Any]]) -> str:
    which = ", ".join(f"features.{name}.{k}.{param}" for k in range(len(found)))
    return (f"{name} is listed {len(found)} times in features.indicators ({_listing(name, found, entries)}); "
            f"name one by its place among them: {which}")


def _no_instance(name: str, instance: int, found: list[int], entries: list[dict[str, Any]]) -> str:
    if not found:
        return f"{name} is not in features.indicators, so it has no {_ordinal(instance)} instance"
    return (f"{name} is listed {len(found)} time{'s' if len(found) > 1 else ''} in features.indicators "
            f"({_listing(name, found, entries)}); places run from 0 to {len(found) - 1}")


def _listing(name: str, found: list[int], entries: list[dict[str, Any]]) -> str:
    shown = []
    for k, i in enumerate(found):
        params = entries[i].get("params") or {}
        text = ", ".join(f"{p}={v}" for p, v in params.items())
        shown.append(f"{k}: {name}({text})" if text else f"{k}: {name}")
    return "; ".join(shown)


def _ordinal(k: int) -> str:
    return {0: "first", 1: "second", 2: "third"}.get(k, f"#{k}")


def _example(name: str) -> str:
    params = INDICATORS[name].params
    if not params:
        return f"{ENABLED}: false"
    first, param = next(iter(params.items()))
    return f"{first}: {param.default}"
