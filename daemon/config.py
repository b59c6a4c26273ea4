"""The daemon's root configuration: YAML file + environment + command line, strictly validated.

Precedence (later wins): built-in defaults < YAML file < ``FAKEWATCH__SECTION__KEY=value``
environment variables < ``--set section.key=value`` command-line overrides.

* ``${VAR}`` (or ``${VAR:-default}``) inside YAML string values is replaced by the environment
  variable (use it for secrets; ``$${`` writes a literal ``${``). A missing variable without a
  default is a config error.
* Override values are parsed as YAML scalars/flow collections (``16`` is an int, ``true`` a bool,
  ``[a, b]`` a list); list items are addressed by index (``streams.0.url``).
* Every problem is reported at once in a single :class:`ConfigError` whose lines name the dotted
  path (``streams.1.source.analysis_fps: Input should be greater than 0 (got -1)``); unknown keys
  are rejected with the closest valid key (``pipeline.max_btach: unknown key (did you mean
  'max_batch'?)``). A bad value that came from an environment variable or ``--set`` is reported
  under that origin (``environment variable FAKEWATCH__HTTP__PORT (http.port): ...``); a YAML
  syntax error keeps PyYAML's multi-line report (file, line, column, the line with a caret).
* Checks that need the filesystem (bundle folder exists and has a manifest, local video files
  exist) run during validation too, so a bad path is caught before anything starts; pass
  ``check_paths=False`` to :func:`load_config` to skip them (unit tests, tooling).

Each part of the daemon owns its config model (``AvSourceSettings`` in daemon/sources/av.py,
``FacesConfig`` in detectors/faces/factory.py, ``PipelineConfig`` in daemon/pipeline.py,
``BundleConfig`` in daemon/models.py, ``KafkaConfig`` in daemon/kafka/config.py,
``ReviewStoreConfig`` in daemon/review/store.py); this module composes them and owns the rest
(streams, sinks, http, logging).
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator

from daemon.config_base import StrictModel
from daemon.kafka.config import KafkaConfig
from daemon.logging import redact
from daemon.models import BundleConfig
from daemon.pipeline import PipelineConfig
from daemon.review.store import ReviewStoreConfig
from daemon.sources.av import AvSourceSettings
from detectors.faces.factory import FacesConfig

ENV_PREFIX = "FAKEWATCH__"

# --- URL / path checks ---------------------------------------------------------------------------

STREAM_SCHEMES = ("file", "rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "srt", "udp", "tcp", "rtp")
STREAM_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _check_paths(info: ValidationInfo) -> bool:
    return bool((info.context or {}).get("check_paths", True))


def check_stream_url(url: str, check_paths: bool = True) -> str:
    """Accept a local path, ``file://`` or a network URL with a scheme PyAV reads; raise ValueError otherwise."""
    url = url.strip()
    if not url:
        raise ValueError("empty url")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme and len(scheme) > 1:  # (one letter: a Windows drive)
        if scheme not in STREAM_SCHEMES:
            raise ValueError(f"unsupported url scheme {scheme!r} (expected a file path or one of {', '.join(STREAM_SCHEMES)})")
        if scheme != "file":
            if not parts.hostname:
                raise ValueError(f"{scheme} url needs a host")
            return url
        path = Path(parts.path)
    else:
        path = Path(url).expanduser()
    if check_paths and not path.exists():
        raise ValueError(f"file not found: {path}")
    return url


# --- sections owned here -------------------------------------------------------------------------


class StreamConfig(StrictModel):
    """One video input. Source settings go under ``source:`` or directly beside ``id``/``url``."""

    id: str = Field(description="stream id: label-safe, unique; used in metrics and events")
    url: str = Field(description="file path, file://, rtsp(s)://, rtmp(s)://, http(s)://, srt://, udp://, tcp://")
    source: AvSourceSettings = Field(default_factory=AvSourceSettings, description="PyAV source settings (over stream_defaults)")

    @model_validator(mode="before")
    @classmethod
    def _nest_source_fields(cls, data: Any) -> Any:
        """Move flattened source settings (``analysis_fps: 5`` beside ``url``) into ``source``."""
        if not isinstance(data, dict):
            return data
        own = {"id", "url", "source"}
        known = set(AvSourceSettings.model_fields)
        flat = {k: v for k, v in data.items() if k not in own and k in known}
        if not flat:
            return data
        data = {k: v for k, v in data.items() if k not in flat}
        nested = data.get("source") or {}
        if isinstance(nested, dict):
            data["source"] = {**flat, **nested}
        return data

    @field_validator("id")
    @classmethod
    def _label_safe(cls, v: str) -> str:
        if not STREAM_ID_RE.match(v):
            raise ValueError(f"stream id {v!r} must be 1-64 characters of A-Z a-z 0-9 _ . - (starting with a letter or digit)")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str, info: ValidationInfo) -> str:
        return check_stream_url(v, _check_paths(info))


class StdoutSinkConfig(StrictModel):
    enabled: bool = Field(True, description="false (or stdout: null) disables it")
    format: Literal["json", "pretty"] = Field("json", description="json: one event per line; pretty: table rows")


class JsonlSinkConfig(StrictModel):
    path: Path = Field(description="JSON-lines file; events are appended")
    fsync: bool = Field(True, description="fsync the file on every flush")
    rotate_mb: float | None = Field(None, gt=0, description="rotate to <path>.1, .2 ... when the file exceeds this size")
    keep: int = Field(5, ge=1, description="rotated files kept")

    @field_validator("path")
    @classmethod
    def _parent_exists(cls, v: Path, info: ValidationInfo) -> Path:
        v = Path(v).expanduser()
        if _check_paths(info) and not v.parent.is_dir():
            raise ValueError(f"folder of the jsonl file does not exist: {v.parent}")
        return v


class WebhookSinkConfig(StrictModel):
    url: str = Field(description="http(s) endpoint receiving POSTed JSON batches")
    timeout_s: float = Field(5.0, gt=0, description="limit for one request")
    retries: int = Field(3, ge=0, le=20, description="retries after the first attempt")
    backoff_s: float = Field(0.5, ge=0, description="first retry delay; doubles each retry")
    backoff_max_s: float = Field(30.0, ge=0, description="cap of the retry delay")
    headers: dict[str, str] = Field(default_factory=dict, description="extra HTTP headers (secrets via ${VAR})")
    batch_size: int = Field(100, ge=1, description="events per POST at most")

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        p = urlsplit(v)
        if p.scheme not in ("http", "https"):
            raise ValueError(f"unsupported url scheme {p.scheme!r} (webhook needs http or https)")
        if not p.hostname:
            raise ValueError("webhook url needs a host")
        return v


class SinksConfig(StrictModel):
    stdout: StdoutSinkConfig | None = Field(default_factory=StdoutSinkConfig, description="events on standard output")
    jsonl: JsonlSinkConfig | None = Field(None, description="events appended to a JSON-lines file")
    webhook: WebhookSinkConfig | None = Field(None, description="events POSTed to an HTTP endpoint")
    kafka: bool = Field(False, description="publish verdicts to the kafka section's verdict topic")


class HttpConfig(StrictModel):
    enabled: bool = Field(True, description="serve /metrics, /healthz, /readyz")
    host: str = Field("127.0.0.1", description="listen address of /metrics, /healthz, /readyz")
    port: int = Field(9108, ge=0, le=65535, description="0 = any free port")
    review: bool = Field(False, description="serve the review page for moderators at /review (docs/review.md)")
    api_token: SecretStr | None = Field(
        None, description="bearer token of the control API under /api/v1 (put it in ${VAR}); null = API off"
    )
    allowed_hosts: list[str] = Field(
        default_factory=list, description="host names (besides IP addresses and localhost) the review page and API answer to"
    )
    store: ReviewStoreConfig = Field(default_factory=ReviewStoreConfig, description="recent-verdicts store behind the review page")

    @field_validator("api_token", mode="before")
    @classmethod
    def _empty_token_is_off(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v  # api_token: ${TOKEN:-} with TOKEN unset

    @field_validator("api_token")
    @classmethod
    def _long_token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value().strip()) < 16:
            raise ValueError("api_token must be at least 16 characters (e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
        return v

    @model_validator(mode="after")
    def _review_needs_the_server(self) -> HttpConfig:
        if not self.enabled and (self.review or self.api_token is not None):
            raise ValueError("review / api_token need the HTTP server (http.enabled: true)")
        return self


class LoggingConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="least severe level logged")
    format: Literal["json", "text"] = Field("json", description="json: one JSON object per line; text: key=value lines")


class DaemonConfig(StrictModel):
    """Root of ``fakewatch.yaml``."""

    streams: list[StreamConfig] = Field(default_factory=list, description="video inputs read with PyAV")
    stream_defaults: AvSourceSettings = Field(
        default_factory=AvSourceSettings,
        description="source settings applied to every stream unless the stream sets them",
    )
    faces: FacesConfig = Field(default_factory=FacesConfig, description="face detection, alignment, embedding")
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig, description="queues, batching, tracking, temporal model, fusion")
    bundle: BundleConfig = Field(default_factory=dict, validate_default=True, description="model bundle and runtime")  # type: ignore[arg-type]
    sinks: SinksConfig = Field(default_factory=SinksConfig, description="where verdict events go")
    http: HttpConfig = Field(default_factory=HttpConfig, description="metrics and health endpoints")
    kafka: KafkaConfig | None = Field(None, description="Kafka frames input / verdicts output; null = no Kafka")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="structured logs on stderr")
    shutdown_timeout_s: float = Field(
        10.0, gt=0, allow_inf_nan=False, description="graceful drain bound on SIGTERM/SIGINT (seconds)"
    )

    @field_validator("shutdown_timeout_s", mode="before")
    @classmethod
    def _seconds(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            raise ValueError(f"expected a number of seconds > 0 (e.g. 10), got {_shown(v)}")
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                raise ValueError(f"expected a number of seconds > 0 (e.g. 10), got {_shown(v)}") from None
        return v

    @model_validator(mode="before")
    @classmethod
    def _apply_stream_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        defaults = data.get("stream_defaults")
        streams = data.get("streams")
        if not isinstance(defaults, dict) or not defaults or not isinstance(streams, list):
            return data
        # unknown keys are reported once, under stream_defaults
        defaults = {k: v for k, v in defaults.items() if k in AvSourceSettings.model_fields}
        merged = []
        for s in streams:
            if isinstance(s, dict):
                s = dict(s)
                own = {k: v for k, v in s.items() if k not in ("id", "url", "source")}
                nested = s.get("source") if isinstance(s.get("source"), dict) else {}
                s = {k: v for k, v in s.items() if k in ("id", "url")}
                s["source"] = {**defaults, **own, **nested}
            merged.append(s)
        return {**data, "streams": merged}

    @field_validator("streams")
    @classmethod
    def _unique_ids(cls, v: list[StreamConfig]) -> list[StreamConfig]:
        seen: set[str] = set()
        dup = sorted({s.id for s in v if s.id in seen or seen.add(s.id)})  # type: ignore[func-returns-value]
        if dup:
            raise ValueError(f"duplicate stream id(s): {', '.join(dup)}")
        return v

    @model_validator(mode="after")
    def _kafka_sink_needs_kafka(self) -> DaemonConfig:
        if self.sinks.kafka and self.kafka is None:
            raise ValueError("sinks.kafka is true but there is no kafka section")
        return self

    def redacted(self) -> dict[str, Any]:
        """The resolved config as plain data with credentials replaced by ``***``."""
        return redact(self.model_dump(mode="json"))


# --- loading -------------------------------------------------------------------------------------


class ConfigError(ValueError):
    """Every problem of a config at once; ``str()`` is a readable multi-line report.

    A problem may span several lines (a YAML syntax error with its caret line); its continuation
    lines are indented under it.
    """

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        self.source = source
        n = len(problems)
        head = f"{source}: {n} problem{'s' if n != 1 else ''}"
        super().__init__(head + "".join("\n  - " + p.replace("\n", "\n    ") for p in problems))


def _shown(v: Any, limit: int = 60) -> str:
    """A short repr of a rejected value for an error message (``true``/``null`` as in YAML)."""
    if v is None or isinstance(v, bool):
        return {None: "null", True: "true", False: "false"}[v]
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_VAR_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def substitute_env(data: Any, env: dict[str, str], problems: list[str], path: str = "") -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of ``data`` (recursively)."""
    if isinstance(data, dict):
        return {k: substitute_env(v, env, problems, f"{path}.{k}" if path else str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [substitute_env(v, env, problems, f"{path}.{i}" if path else str(i)) for i, v in enumerate(data)]
    if not isinstance(data, str) or "$" not in data:
        return data

    def sub(m: re.Match) -> str:
        if m.group(0) == "$${":
            return "${"
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(f"{path or '<root>'}: environment variable {name} is not set (referenced as ${{{name}}})")
        return ""

    return _VAR_RE.sub(sub, data)


def parse_value(text: str) -> Any:
    """An override value: a YAML scalar or flow collection (``16``, ``true``, ``[a, b]``); else the raw string."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``value`` at ``a.b.0.c`` inside nested dicts/lists, creating dicts on the way."""
    keys = [k for k in dotted.split(".")]
    if not dotted or any(not k for k in keys):
        raise ValueError(f"bad key {dotted!r}")
    cur: Any = data
    for i, k in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(cur, list):
            if not k.isdigit():
                raise ValueError(f"{'.'.join(keys[:i]) or dotted}: is a list, index it with a number (got {k!r})")
            idx = int(k)
            if idx > len(cur):
                raise ValueError(f"{'.'.join(keys[: i + 1])}: list index out of range (list has {len(cur)} items)")
            if idx == len(cur):
                cur.append(None)
            if last:
                cur[idx] = value
            else:
                if not isinstance(cur[idx], dict | list):
                    cur[idx] = [] if keys[i + 1].isdigit() else {}
                cur = cur[idx]
        elif isinstance(cur, dict):
            if last:
                cur[k] = value
            else:
                if not isinstance(cur.get(k), dict | list):
                    cur[k] = [] if keys[i + 1].isdigit() else {}
                cur = cur[k]
        else:
            raise ValueError(f"{'.'.join(keys[:i])}: is a value, cannot set {dotted}")


def env_overrides(env: dict[str, str]) -> list[tuple[str, str]]:
    """``FAKEWATCH__PIPELINE__MAX_BATCH=16`` -> ``("pipeline.max_batch", "16")`` (sorted by name)."""
    out = []
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            out.append((name[len(ENV_PREFIX):].lower().replace("__", "."), env[name]))
    return out


def _model_of(ann: Any) -> Any:
    """The pydantic model, list or dict type inside an annotation (``X | None`` -> ``X``), else None."""
    import typing

    from pydantic import BaseModel

    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    origin = typing.get_origin(ann)
    if origin in (list, dict):
        return ann
    if origin is not None:
        for a in typing.get_args(ann):
            found = _model_of(a)
            if found is not None:
                return found
    return None


def valid_keys(parts: tuple[Any, ...]) -> list[str]:
    """The keys the config accepts in the mapping at ``parts`` (a path of keys and list indexes)."""
    import typing

    from pydantic import BaseModel

    t: Any = DaemonConfig
    for part in parts:
        t = _model_of(t)
        if t is None:
            return []
        if isinstance(t, type) and issubclass(t, BaseModel):
            f = t.model_fields.get(str(part))
            if f is not None:
                t = f.annotation
            # else: a union branch / model name that pydantic puts in some paths: stay here
        elif typing.get_origin(t) is list:
            t = typing.get_args(t)[0] if isinstance(part, int) else t
        elif typing.get_origin(t) is dict:
            t = typing.get_args(t)[1]
    t = _model_of(t)
    if not (isinstance(t, type) and issubclass(t, BaseModel)):
        return []
    keys = list(t.model_fields)
    if t is StreamConfig:  # source settings may sit beside id/url
        keys += list(AvSourceSettings.model_fields)
    return keys


def did_you_mean(key: str, candidates: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate (difflib), or ``""``."""
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not close and "_" not in key:  # 'maxbatch' -> 'max_batch'
        close = [c for c in candidates if c.replace("_", "") == key.replace("-", "").lower()][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def _origin_of(parts: tuple[Any, ...], origins: dict[tuple[str, ...], str]) -> tuple[str, tuple[str, ...]] | None:
    """(label, key) of the override (env variable or --set) that set the value at ``parts``, if any."""
    if not origins:
        return None
    path = tuple(str(p) for p in parts)
    candidates = [path]
    if len(path) >= 3 and path[0] == "streams" and path[2] == "source":  # source keys beside id/url
        candidates.append(path[:2] + path[3:])
    best: tuple[str, tuple[str, ...]] | None = None
    for cand in candidates:
        for key, label in origins.items():
            if cand[: len(key)] == key and (best is None or len(key) > len(best[1])):
                best = (label, key)
    return best


def _format_error(err: dict[str, Any], origins: dict[tuple[str, ...], str] | None = None) -> str:
    # pydantic puts validator names ("function-after[...]") in the path of some errors; drop those parts
    parts = tuple(p for p in err.get("loc", ()) if not (isinstance(p, str) and p.startswith("function-")))
    loc = ".".join(str(p) for p in parts)
    typ, msg = err.get("type", ""), err.get("msg", "")
    if typ == "extra_forbidden":
        msg = "unknown key" + (did_you_mean(str(parts[-1]), valid_keys(parts[:-1])) if parts else "")
    elif typ == "missing":
        msg = "required key is missing"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    elif "input" in err:
        value = err["input"]
        if not isinstance(value, dict | list):
            msg = f"{msg} (got {_shown(redact(value, str(parts[-1]) if parts else None))})"
        elif typ not in ("model_type", "dict_type"):  # a collection where a value belongs (not a whole section)
            msg = f"{msg} (got a {'mapping' if isinstance(value, dict) else 'list'}: {_shown(redact(value))})"
    origin = _origin_of(parts, origins or {})
    if origin is not None:
        label, key = origin
        return f"{label}: {msg}" if key == tuple(str(p) for p in parts) and label.startswith("--set") \
            else f"{label} ({loc}): {msg}"
    return f"{loc}: {msg}" if loc else msg


def validate_config(
    data: dict[str, Any],
    source: str = "config",
    check_paths: bool = True,
    origins: dict[tuple[str, ...], str] | None = None,
) -> DaemonConfig:
    """Validate ``data``; ``origins`` maps dotted keys set by overrides to their label (error reports)."""
    try:
        return DaemonConfig.model_validate(data, context={"check_paths": check_paths})
    except ValidationError as e:
        problems = [_format_error(err, origins) for err in e.errors()]
        # the streams validator does not run when a stream itself is invalid: report duplicates anyway
        dup = _duplicate_ids(data.get("streams") if isinstance(data, dict) else None)
        msg = f"streams: duplicate stream id(s): {', '.join(dup)}"
        if dup and msg not in problems:
            problems.insert(0, msg)
        raise ConfigError(_dedupe(problems), source) from None


def _duplicate_ids(streams: Any) -> list[str]:
    if not isinstance(streams, list):
        return []
    ids = [s.get("id") for s in streams if isinstance(s, dict) and isinstance(s.get("id"), str)]
    return sorted({i for i in ids if ids.count(i) > 1})


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    check_paths: bool = True,
) -> DaemonConfig:
    """Load ``path`` (YAML; None = defaults only), apply env and ``key=value`` overrides, validate.

    Raises :class:`ConfigError` listing every problem found.
    """
    env = dict(os.environ if env is None else env)
    problems: list[str] = []
    source = str(path) if path is not None else "config"
    data: Any = {}
    if path is not None:
        p = Path(path)
        try:
            data = _load_yaml(p.read_text(encoding="utf-8"), str(p)) or {}
        except FileNotFoundError:
            raise ConfigError([f"file not found: {p}"], source) from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError([f"cannot read: {e}"], source) from None
        except yaml.YAMLError as e:
            raise ConfigError([_yaml_problem(e)], source) from None
        if not isinstance(data, dict):
            raise ConfigError([f"expected a mapping of sections at the top level, got {type(data).__name__}"], source)
        data = substitute_env(data, env, problems)

    origins: dict[tuple[str, ...], str] = {}  # dotted key -> who set it last (for the error report)
    env_names = {k[len(ENV_PREFIX):].lower().replace("__", "."): k for k in env if k.startswith(ENV_PREFIX)}
    for origin, items in (
        ("environment variable", [(env_names.get(k, k), k, v) for k, v in env_overrides(env)]),
        ("--set", [(o.partition("=")[0].strip(), *_split_override(o, problems)) for o in overrides]),
    ):
        for label, key, raw in items:
            if key is None:
                continue
            try:
                set_path(data, key, parse_value(raw))
            except ValueError as e:
                problems.append(f"{origin} {label}: {e}")
                continue
            parts = tuple(key.split("."))
            for k in [k for k in origins if k[: len(parts)] == parts]:  # a section set later replaces its keys
                del origins[k]
            origins[parts] = f"{origin} {label}"

    try:
        cfg = validate_config(data, source, check_paths, origins)
    except ConfigError as e:
        raise ConfigError(_dedupe(problems + e.problems), source) from None
    if problems:
        raise ConfigError(problems, source)
    return cfg


def _load_yaml(text: str, name: str) -> Any:
    """``yaml.safe_load`` of ``text``, with ``name`` (the file) in the marks of its errors."""
    loader = yaml.SafeLoader(text)  # (from a string, not a stream: errors then quote the line)
    loader.name = name
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's report, layout kept: what is wrong, then ``in "file", line L, column C:`` and the line
    with a caret under the column (the lines are indented under the problem by :class:`ConfigError`)."""
    text = str(e).rstrip()
    mark = getattr(e, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"not valid YAML{where}:\n{text}"


def _split_override(item: str, problems: list[str]) -> tuple[str | None, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        problems.append(f"--set {item!r}: expected key=value (e.g. pipeline.max_batch=16)")
        return None, ""
    return key.strip(), value


def dump_yaml(cfg: DaemonConfig) -> str:
    """The resolved, redacted config as YAML (what ``--dry-run`` prints)."""
    return yaml.safe_dump(cfg.redacted(), sort_keys=False, default_flow_style=False)


# --- reference documentation ----------------------------------------------------------------------


def _type_name(ann: Any) -> str:
    import typing

    origin = typing.get_origin(ann)
    if origin is Literal:
        return " \\| ".join(repr(a).replace("'", "") for a in typing.get_args(ann))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " \\| ".join(_type_name(a) for a in typing.get_args(ann))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(ann))}]"
    if ann is type(None):
        return "null"
    return getattr(ann, "__name__", str(ann)).replace("typing.", "")


def reference_rows(model: type | None = None, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) for every key of the config, nested sections expanded."""
    import typing

    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    model = model or DaemonConfig
    rows = []
    for name, f in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = f.annotation
        args = [a for a in typing.get_args(ann) if a is not type(None)] if typing.get_origin(ann) else []
        if typing.get_origin(ann) is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            rows.append((key, f"list of {args[0].__name__}", "[]", f.description or ""))
            rows += reference_rows(args[0], f"{key}[].")
            continue
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if sub is None and len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            sub = args[0]
        if f.default is not PydanticUndefined:
            default = "null" if f.default is None else repr(f.default) if not isinstance(f.default, str) else f.default
        elif f.default_factory is not None:
            default = "(section)" if sub is not None else "{}" if f.default_factory in (dict,) else "(default)"
        else:
            default = "(required)"
        if sub is not None:
            rows.append((key, "section" + (" or null" if args else ""), default, f.description or ""))
            rows += reference_rows(sub, f"{key}.")
        else:
            rows.append((key, _type_name(ann), default, f.description or ""))
    return rows


def reference_markdown() -> str:
    """A markdown table of every config key (docs/configuration.md embeds its output)."""
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, typ, default, desc in reference_rows():
        lines.append(f"| `{key}` | {typ} | `{default}` | {desc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
