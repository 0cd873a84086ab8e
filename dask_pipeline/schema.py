"""The base class of every config section, and the small types sections share."""

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict


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
