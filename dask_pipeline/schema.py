"""The base class of every config section, the small types sections share, and the
helpers both the config and the study's search space use (dotted paths, error text).

Kept free of any section module, so ``config`` (which imports every section) and
``tuning`` (whose ``TuneConfig`` is one of them) both import it without a circle.
"""

from __future__ import annotations

import datetime as dt
import difflib
import typing
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from dask_pipeline.errors import ConfigError
from dask_pipeline.redaction import redact


class Section(BaseModel):
    """A config section. Unknown keys are errors; values are validated once, at load."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _date_as_text(value: Any) -> Any:
    # YAML reads an unquoted 2020-01-31 as a date; the config keeps dates as ISO text.
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


#: A date or timestamp written in the config, kept as ISO text.
DateText = Annotated[str, BeforeValidator(_date_as_text)]


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


def describe_error(err: dict[str, Any], root: type[BaseModel]) -> str:
    """One pydantic error of validating ``root`` as ``'dotted.key': message (got value)``."""
    loc = [str(p) for p in err["loc"]]
    message = err["msg"].removeprefix("Value error, ")
    if not loc:  # a check across sections: its message names the keys itself
        return message
    dotted = ".".join(loc)
    if message.startswith(f"'{dotted}."):  # the validator names a key deeper than where it runs
        return message
    if err["type"] == "extra_forbidden":
        valid = valid_names(root, err["loc"][:-1])
        hint = did_you_mean(loc[-1], valid)
        return f"unknown key '{dotted}'{hint}" if hint else f"unknown key '{dotted}' (valid: {', '.join(valid)})"
    if err["type"] in ("missing",):
        return f"'{dotted}': required key is missing"
    value = err.get("input")
    # Validators that quote the value themselves need no second copy of it.
    shown = "" if isinstance(value, dict) or repr(value) in message else f" (got {value!r})"
    return f"'{dotted}': {message}{shown}"


def valid_names(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the section at ``loc`` below ``root``."""
    model: Any = root
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _model_of(field.annotation)
        if model is None:
            return []
    return sorted(getattr(model, "model_fields", {}))


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def did_you_mean(name: str, valid: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``valid``, or an empty string."""
    close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def dump_config(cfg: BaseModel) -> str:
    """A resolved config as YAML text, with any password in a URL masked (``redact``)."""
    import yaml

    # Unwrapped: a long value would be folded at a space, and a password typed with spaces
    # split over two lines, where ``redact`` (one line at a time) no longer sees it whole.
    return redact(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, width=float("inf")))
