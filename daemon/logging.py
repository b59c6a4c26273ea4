"""Structured one-line logs with credentials redacted.

``setup_logging`` installs one handler on the root logger that writes one line per record, either
JSON (``{"ts":..., "level":..., "logger":..., "msg":..., **extra}``) or plain text. A filter runs
every message and extra field through :func:`redact_text`, so a URL with ``user:password@``, a
``password=...`` query parameter or an ``Authorization`` header value never reaches a log line.

:func:`redact` does the same for nested config data (used by ``fakewatch run --dry-run``).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

REDACTED = "***"

# keys whose values are secrets wherever they appear (config sections, headers, extras)
SECRET_KEY_RE = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|authorization|credential|private[_-]?key|sasl_plain_password|cookie)",
    re.IGNORECASE,
)
# scheme://user:password@host -> scheme://user:***@host ; scheme://token@host -> scheme://***@host
_URL_USERINFO_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@:\s]*)(?::(?P<pw>[^/@\s]*))?@")
# ?password=... / &token=... / key=... inside URLs or free text
_KV_SECRET_RE = re.compile(
    r"(?P<key>\b[\w.-]*(?:pass(?:word|wd)?|secret|token|api[_-]?key|signature|credential)[\w.-]*)(?P<sep>\s*[=:]\s*)(?P<val>[^\s&,;\"'}]+)",
    re.IGNORECASE,
)
_BEARER_RE = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)

# LogRecord attributes that are not user "extra" fields
_RECORD_ATTRS = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime", "taskName"}


def _userinfo_sub(m: re.Match) -> str:
    if m.group("pw") is not None:
        return f"{m.group('scheme')}{m.group('user')}:{REDACTED}@"
    return f"{m.group('scheme')}{REDACTED}@"


def redact_text(text: str) -> str:
    """Remove credentials from free text: URL userinfo, secret-looking key=value pairs, bearer tokens."""
    if not text:
        return text
    text = _URL_USERINFO_RE.sub(_userinfo_sub, text)
    text = _BEARER_RE.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _KV_SECRET_RE.sub(lambda m: f"{m.group('key')}{m.group('sep')}{REDACTED}", text)
    return text


def redact(obj: Any, key: str | None = None) -> Any:
    """A copy of nested dicts/lists/strings with secrets replaced by ``***``.

    A value is redacted entirely when its key looks like a secret (password, token, secret,
    api_key, authorization, ...); other strings go through :func:`redact_text`.
    """
    if key is not None and SECRET_KEY_RE.search(str(key)) and obj not in (None, "", {}, []):
        if isinstance(obj, dict):
            return {k: REDACTED for k in obj}
        return REDACTED
    if isinstance(obj, dict):
        return {k: redact(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


class RedactingFilter(logging.Filter):
    """Redacts the formatted message and string extras of every record in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a bad %-format: keep the raw message
            msg = str(record.msg)
        record.msg, record.args = redact_text(msg), None
        for k, v in list(vars(record).items()):
            if k not in _RECORD_ATTRS:
                setattr(record, k, redact(v, k))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (RFC 3339, UTC), level, logger, msg, extras, exc (if any)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _RECORD_ATTRS and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(out, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``2026-11-22T03:00:00Z info  daemon.app: message key=value ...`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        extras = " ".join(
            f"{k}={v}" for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")
        )
        line = f"{ts} {record.levelname.lower():<7} {record.name}: {record.getMessage()}"
        if extras:
            line += " " + extras
        if record.exc_info:
            line += " | " + redact_text(self.formatException(record.exc_info)).replace("\n", " | ")
        return line


def setup_logging(level: str = "info", fmt: str = "json", stream=None) -> logging.Handler:
    """Install the one root handler (replacing an earlier one installed here); returns it."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_fakewatch", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._fakewatch = True  # type: ignore[attr-defined]
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # chatty libraries stay at warning unless we debug
    for noisy in ("aiokafka", "aiohttp.access", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level.lower() != "debug" else logging.DEBUG)
    return handler
