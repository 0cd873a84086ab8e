"""Secrets out of everything the package prints or writes.

Kept apart from ``config`` (which imports every section's stage module) so that the
CLI can redact an error message without paying for those imports.
"""

import re

#: A URL's password (``scheme://user:PASSWORD@host``) and secret-looking query parameters.
#: The password runs to the last ``@`` before the host: it may hold ``@`` and, typed
#: unencoded, spaces (``mysql://alice:pa ss@db/x``); the host is the text after that ``@``
#: up to the end of the line or the next space. It never spans lines or another ``://``,
#: so a YAML writer must not wrap long values (``dump_config``).
#: A query parameter is secret when its name holds one of these words (``access_token``,
#: ``apikey``, ``X-Amz-Signature``, ``X-Goog-Credential``) or is ``sig`` (Azure SAS); only
#: after ``?``, ``&`` or ``;``, so prose and config keys such as ``api_key:`` stay as written.
_SECRET_WORDS = "token|key|secret|signature|credential|password|passwd|pwd"
_SECRETS = re.compile(
    # A scheme starts where no scheme character precedes it: each run of letters is read
    # once, not from each of its letters (quadratic on a long word).
    r"(?P<keep>(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?:(?!://)[^\n]){0,200}?(?=@[^@\s]*(?:\s|$))"
    # The look-ahead finds the word inside the name, which is then taken whole: linear time,
    # where ``name*(word)name*=`` is quadratic on a long name without ``=``.
    rf"|(?P<qkeep>[?&;](?:(?=[\w.-]*?(?:{_SECRET_WORDS}))[\w.-]+|sig)=)[^&;\s'\"]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with passwords in URLs and secret query parameters replaced by ``***``.

    Everything the package writes or prints that may hold a user's URL (``config.yaml``,
    ``run.json``, log lines, error messages) goes through this, so a storage URL such as
    ``postgresql://user:pass@db/optuna`` never lands in a results folder or a log.
    """
    return _SECRETS.sub(lambda m: (m.group("keep") or m.group("qkeep")) + "***", text)
