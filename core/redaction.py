"""Keep API tokens out of the logs.

Civitai clients put the token in the download link (``?token=atl_...``), and the request line
is what access logs write: Django's development server (``django.server``), gunicorn's
``--access-logfile`` (``gunicorn.access``) and any handler of the root logger. The filter
below rewrites every such record before it is formatted: ``token=`` (and the usual
``access_token=``/``api_key=``) query values become ``[redacted]``, and so does anything that
looks like an Atelier token (``atl_`` followed by its secret) wherever it appears.

:func:`install_token_redaction` attaches it to those loggers (``CoreConfig.ready``); the
settings' ``LOGGING`` attaches it to the console handler too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

REDACTED = "[redacted]"
_QUERY_SECRET = re.compile(
    r"(?i)((?:^|[?&;\s\"'])(?:token|access_token|api_key|apikey)=)[^&\s\"';]*"
)
_TOKEN = re.compile(r"atl_[A-Za-z0-9_\-]{8,}")
ACCESS_LOGGERS = ("django.server", "gunicorn.access", "gunicorn.error", "django.request")


def redact(text: str) -> str:
    """``text`` with query-string secrets and Atelier tokens replaced by ``[redacted]``."""
    text = _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, text)
    return _TOKEN.sub("atl_" + REDACTED, text)


def _redacted(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactTokensFilter(logging.Filter):
    """Rewrites a record's message and arguments; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_redacted(a) for a in args)
        elif isinstance(args, MutableMapping):  # gunicorn's access atoms
            for key in list(args):
                args[key] = _redacted(args[key])
        return True


def install_token_redaction() -> None:
    """Attach the filter to the access loggers (once per process)."""
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokensFilter) for f in logger.filters):
            logger.addFilter(RedactTokensFilter())
