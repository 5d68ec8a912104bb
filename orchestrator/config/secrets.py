"""Passwords stay out of everything the project writes.

A storage or tracking URL may carry a password (`postgresql://user:password@host/db`). The
process that needs it keeps it in memory and hands it to its trial processes through their
environment; every param, tag, job file, log line, message and summary gets the redacted form.
`scrub` is applied where text of unknown origin (an exception, a child's output) is written.
Better still, the password never appears in the config: libpq reads `PGPASSWORD` / `~/.pgpass`,
MLflow reads `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`, and the whole URL can come
from `$ORCHESTRATOR_STORAGE` (see `load.py`).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any
from urllib.parse import unquote

MASK = "***"
# scheme://user:password@  (the user part may be empty). The password runs to the last '@' of the
# word: a password may hold '/', ':' or an unescaped '@', and masking a little too much is safe.
_CREDENTIALS = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*):(?P<password>[^\s'\"]+)@")
SECRET_VARIABLES = ("PGPASSWORD", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "AWS_SECRET_ACCESS_KEY",
                    "AWS_SESSION_TOKEN", "HF_TOKEN")
# Secrets only the driver holds (trial processes are not handed them), scrubbed all the same.
DRIVER_SECRET_VARIABLES = ("RAY_AUTH_TOKEN",)
_known: set[str] = set()


def remember(value: str | None) -> None:
    """Treat the password in URL `value`, as written and as the driver will read it, as a secret
    from now on: `scrub` blanks it out of any text, whatever the text around it."""
    if not value:
        return
    passwords = [m.group("password") for m in _CREDENTIALS.finditer(value)]
    try:
        import sqlalchemy

        passwords.append(sqlalchemy.make_url(value).password)  # what a database driver will send
    except Exception:  # noqa: BLE001 - not a database URL: the pattern above is all there is
        pass
    for password in passwords:
        if password:
            _known.update({str(password), unquote(str(password))})


def _secrets() -> set[str]:
    found = {os.environ.get(v) for v in (*SECRET_VARIABLES, *DRIVER_SECRET_VARIABLES)}
    # Short values would blank out ordinary words; real passwords and tokens are longer.
    return {s for s in (found | _known) if s and len(s) >= 4}


def redact(url: str | None) -> str | None:
    """The URL with its password replaced by ***."""
    if url is None:
        return None
    return _CREDENTIALS.sub(lambda m: f"{m.group('head')}:{MASK}@", url)


def scrub(text: str) -> str:
    """`text` with every URL password and every known secret value replaced by ***."""
    text = redact(text)
    for secret in sorted(_secrets(), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def public(value: Any) -> Any:
    """A nested dict/list with every string scrubbed: safe to log or write."""
    if isinstance(value, dict):
        return {k: public(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(public(v) for v in value)
    if isinstance(value, str):
        return scrub(value)
    return value


class ScrubFilter(logging.Filter):
    """Scrubs every log record that passes through a handler (an exception's text may hold a URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True
