"""Config loading: strict validation with dotted paths, env/--set overrides, ${VAR}, dry-run exit codes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from daemon.config import ConfigError, DaemonConfig, env_overrides, load_config, set_path
from detectors.bundle import FrameModelSpec, Manifest, write_bundle

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "fakewatch.yaml"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    """A bundle folder with a valid manifest (the model file is a placeholder: config checks only)."""
    root = tmp_path_factory.mktemp("bundle")
    write_bundle(root, Manifest("test", "1", frame=FrameModelSpec(method="plain", backbone="tiny")), {"frame.onnx": b"x"})
    return root


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "fakewatch.yaml"
    p.write_text(text)
    return p


def problems(excinfo) -> list[str]:
    return excinfo.value.problems


def test_example_config_loads(bundle_dir):
    cfg = load_config(EXAMPLE, [f"bundle.path={bundle_dir}"], env={"CAM_PASSWORD": "s3cret!"})
    assert isinstance(cfg, DaemonConfig)
    assert [s.id for s in cfg.streams] == ["lobby", "studio", "uploads-hls"]
    lobby, studio = cfg.streams[0], cfg.streams[1]
    assert "s3cret!" in lobby.url
    assert lobby.source.av_options == {"rtsp_transport": "tcp"}  # flattened key moved into source
    assert lobby.source.analysis_fps == 5  # from stream_defaults
    assert studio.source.analysis_fps == 10  # per-stream override wins
    assert studio.source.open_timeout_s == 10
    assert cfg.http.host == "127.0.0.1"
    assert cfg.sinks.webhook is not None and cfg.sinks.webhook.retries == 3
    # secrets never appear in the redacted dump
    dumped = yaml.safe_dump(cfg.redacted())
    assert "s3cret!" not in dumped and "viewer:***@" in dumped


def test_unknown_keys_rejected_with_dotted_path(tmp_path):
    p = write(tmp_path, "http: {port: 1, hots: x}\nsinks: {webhook: {url: 'http://127.0.0.1/x', retires: 2}}\nnope: 1\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p, env={}, check_paths=False)
    assert "http.hots: unknown key (did you mean 'host'?)" in problems(ei)
    assert "sinks.webhook.retires: unknown key (did you mean 'retries'?)" in problems(ei)
    assert "nope: unknown key" in problems(ei)  # nothing close: no suggestion
    assert str(ei.value).startswith(f"{p}: 3 problems")


def test_unknown_stream_source_key_named(tmp_path):
    p = write(tmp_path, "streams:\n  - {id: a, url: 'rtsp://127.0.0.1/a', analysis_fsp: 3}\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p, env={}, check_paths=False)
    assert problems(ei) == ["streams.0.analysis_fsp: unknown key (did you mean 'analysis_fps'?)"]


@pytest.mark.parametrize("text,problem", [
    ("pipeline: {max_btach: 8}\n", "pipeline.max_btach: unknown key (did you mean 'max_batch'?)"),
    ("pipeline: {fusion: {threshold_hi: 0.7}}\n", "pipeline.fusion.threshold_hi: unknown key (did you mean 'threshold_high'?)"),
    ("faces: {regions: {enabld: true}}\n", "faces.regions.enabld: unknown key (did you mean 'enabled'?)"),
    ("stream_defaults: {reconnect: {max_attemps: 3}}\n",
     "stream_defaults.reconnect.max_attemps: unknown key (did you mean 'max_attempts'?)"),
    ("sinks: {jsnl: {path: x.jsonl}}\n", "sinks.jsnl: unknown key (did you mean 'jsonl'?)"),
    ("kafka: {bootstrap_server: [h:9092]}\n", "kafka.bootstrap_server: unknown key (did you mean 'bootstrap_servers'?)"),
    ("shutdown_timeout: 5\n", "shutdown_timeout: unknown key (did you mean 'shutdown_timeout_s'?)"),
])
def test_unknown_keys_suggest_the_closest_key(tmp_path, text, problem):
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, text), env={}, check_paths=False)
    assert problem in problems(ei)


def test_wrong_types_and_ranges_all_reported(tmp_path):
    p = write(tmp_path, "http: {port: 'abc'}\nbundle: {runtime: gpu, threads: 0}\nlogging: {level: loud}\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p, env={}, check_paths=False)
    msgs = problems(ei)
    assert len(msgs) == 4
    assert any(m.startswith("http.port: ") and "'abc'" in m for m in msgs)
    assert any(m.startswith("bundle.runtime: ") for m in msgs)
    assert any(m.startswith("bundle.threads: ") for m in msgs)
    assert any(m.startswith("logging.level: ") for m in msgs)


@pytest.mark.parametrize(
    "url,fragment",
    [
        ("ftp://127.0.0.1/a.mp4", "unsupported url scheme 'ftp'"),
        ("javascript:alert(1)", "unsupported url scheme 'javascript'"),
        ("rtsp:///nohost", "needs a host"),
    ],
)
def test_bad_stream_url_scheme(tmp_path, url, fragment):
    p = write(tmp_path, f"streams:\n  - {{id: a, url: '{url}'}}\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p, env={}, check_paths=False)
    assert len(problems(ei)) == 1
    assert problems(ei)[0].startswith("streams.0.url: ") and fragment in problems(ei)[0]


def test_webhook_needs_http(tmp_path):
    with pytest.raises(ConfigError) as ei:
        load_config(None, ["sinks.webhook.url=file:///etc/passwd"], env={}, check_paths=False)
    assert "--set sinks.webhook.url: unsupported url scheme 'file' (webhook needs http or https)" in problems(ei)


def test_missing_bundle_and_missing_file_caught(tmp_path, bundle_dir):
    with pytest.raises(ConfigError) as ei:
        load_config(None, [f"bundle.path={tmp_path / 'nope'}", f"streams.0.id=a", f"streams.0.url={tmp_path / 'x.mp4'}"], env={})
    msgs = problems(ei)
    assert f"--set bundle.path: bundle folder not found: {tmp_path / 'nope'}" in msgs
    assert f"--set streams.0.url: file not found: {tmp_path / 'x.mp4'}" in msgs
    with pytest.raises(ConfigError, match="is not a model bundle"):
        load_config(None, [f"bundle.path={tmp_path}"], env={})
    assert load_config(None, [f"bundle.path={bundle_dir}"], env={}).bundle.path == bundle_dir


def test_duplicate_and_unsafe_stream_ids(tmp_path):
    p = write(
        tmp_path,
        "streams:\n"
        "  - {id: cam1, url: 'rtsp://127.0.0.1/a'}\n"
        "  - {id: cam1, url: 'rtsp://127.0.0.1/b'}\n",
    )
    with pytest.raises(ConfigError) as ei:
        load_config(p, env={}, check_paths=False)
    assert problems(ei) == ["streams: duplicate stream id(s): cam1"]
    p = write(tmp_path, "streams:\n  - {id: 'cam 1\"}', url: 'rtsp://127.0.0.1/a'}\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p, env={}, check_paths=False)
    assert problems(ei)[0].startswith("streams.0.id: stream id")


def test_env_override_and_precedence(tmp_path):
    p = write(tmp_path, "http: {port: 9000}\nlogging: {level: info}\n")
    env = {"FAKEWATCH__HTTP__PORT": "9100", "FAKEWATCH__LOGGING__LEVEL": "debug", "FAKEWATCH_OTHER": "ignored"}
    cfg = load_config(p, env=env, check_paths=False)
    assert cfg.http.port == 9100 and cfg.logging.level == "debug"
    # --set beats the environment, which beats the file
    cfg = load_config(p, ["http.port=9200"], env=env, check_paths=False)
    assert cfg.http.port == 9200
    assert env_overrides(env) == [("http.port", "9100"), ("logging.level", "debug")]
    with pytest.raises(ConfigError) as ei:
        load_config(p, env={"FAKEWATCH__HTTP__PROT": "1"}, check_paths=False)
    assert problems(ei) == ["environment variable FAKEWATCH__HTTP__PROT (http.prot): unknown key (did you mean 'port'?)"]


def test_bad_override_values_are_reported_under_their_origin(tmp_path):
    """A bad value from the environment names the variable (not the YAML file, whose value it replaced);
    one from --set names the --set; values from the file keep their dotted path."""
    p = write(tmp_path, "http: {port: 9000}\nlogging: {level: loud}\n")
    env = {"FAKEWATCH__HTTP__PORT": "abc", "FAKEWATCH__STREAMS__0__ID": "a",
           "FAKEWATCH__STREAMS__0__URL": "rtsp://127.0.0.1/a", "FAKEWATCH__STREAMS__0__ANALYSIS_FPS": "-1"}
    with pytest.raises(ConfigError) as ei:
        load_config(p, ["bundle.threads=0"], env=env, check_paths=False)
    msgs = problems(ei)
    assert "environment variable FAKEWATCH__HTTP__PORT (http.port): Input should be a valid integer, unable to " \
           "parse string as an integer (got 'abc')" in msgs
    # a source key beside id/url is moved into streams.0.source: still traced back to its variable
    assert "environment variable FAKEWATCH__STREAMS__0__ANALYSIS_FPS (streams.0.source.analysis_fps): " \
           "Input should be greater than 0 (got -1)" in msgs
    assert "--set bundle.threads: Input should be greater than or equal to 1 (got 0)" in msgs
    assert any(m.startswith("logging.level: ") for m in msgs)  # from the file
    assert len(msgs) == 4
    # --set beats the environment: the --set is named
    with pytest.raises(ConfigError) as ei:
        load_config(p, ["http.port=xyz"], env={"FAKEWATCH__HTTP__PORT": "abc"}, check_paths=False)
    assert [m for m in problems(ei) if "http.port" in m] == [
        "--set http.port: Input should be a valid integer, unable to parse string as an integer (got 'xyz')"]


def test_set_override_types_and_lists(tmp_path):
    cfg = load_config(
        None,
        ["streams.0.id=a", "streams.0.url=rtsp://127.0.0.1/a", "streams.0.source.analysis_fps=2.5",
         "sinks.webhook={url: 'http://127.0.0.1/h', retries: 1}", "bundle.threads=4", "sinks.stdout=null"],
        env={},
        check_paths=False,
    )
    assert cfg.streams[0].source.analysis_fps == 2.5
    assert cfg.sinks.webhook.retries == 1
    assert cfg.bundle.threads == 4
    assert cfg.sinks.stdout is None
    with pytest.raises(ConfigError) as ei:
        load_config(None, ["bundle.threads=many", "novalue"], env={}, check_paths=False)
    msgs = problems(ei)
    assert any("expected key=value" in m for m in msgs)
    assert any(m.startswith("--set bundle.threads: ") for m in msgs)


def test_set_path_helper():
    d: dict = {"a": [{"b": 1}]}
    set_path(d, "a.0.c", 2)
    set_path(d, "a.1.b", 3)
    set_path(d, "x.0", "y")
    assert d == {"a": [{"b": 1, "c": 2}, {"b": 3}], "x": ["y"]}
    with pytest.raises(ValueError, match="index it with a number"):
        set_path(d, "a.b", 1)
    with pytest.raises(ValueError, match="out of range"):
        set_path(d, "a.5.b", 1)


def test_env_var_substitution(tmp_path):
    p = write(
        tmp_path,
        "sinks:\n  webhook:\n    url: 'http://127.0.0.1:${HOOK_PORT}/h'\n"
        "    headers: {Authorization: 'Bearer ${TOKEN}', X-Lit: '$${NOT_A_VAR}', X-Def: '${UNSET_VAR:-fallback}'}\n",
    )
    cfg = load_config(p, env={"HOOK_PORT": "8088", "TOKEN": "abc123"}, check_paths=False)
    w = cfg.sinks.webhook
    assert w.url == "http://127.0.0.1:8088/h"
    assert w.headers == {"Authorization": "Bearer abc123", "X-Lit": "${NOT_A_VAR}", "X-Def": "fallback"}
    assert "abc123" not in yaml.safe_dump(cfg.redacted())
    with pytest.raises(ConfigError) as ei:
        load_config(p, env={"HOOK_PORT": "8088"}, check_paths=False)
    assert problems(ei) == ["sinks.webhook.headers.Authorization: environment variable TOKEN is not set (referenced as ${TOKEN})"]


def test_yaml_errors_keep_line_column_and_caret(tmp_path):
    p = write(tmp_path, "http:\n  port: 9108\n   host: x\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p, env={})
    # PyYAML's layout survives: the problem, the file with line and column, the line, a caret under the column
    assert str(ei.value).splitlines() == [
        f"{p}: 1 problem",
        "  - not valid YAML (line 3, column 8):",
        "    mapping values are not allowed here",
        f'      in "{p}", line 3, column 8:',
        "           host: x",
        "               ^",
    ]
    with pytest.raises(ConfigError, match=r"not valid YAML \(line 2, column 1\)"):
        load_config(write(tmp_path, "http: {port: [\n"), env={})
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"), env={})
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml", env={})


@pytest.mark.parametrize("value,problem", [
    ("-1", "Input should be greater than 0 (got -1)"),
    ("0", "Input should be greater than 0 (got 0)"),
    ("10s", "expected a number of seconds > 0 (e.g. 10), got '10s'"),
    ("true", "expected a number of seconds > 0 (e.g. 10), got true"),
    ("null", "expected a number of seconds > 0 (e.g. 10), got null"),
    ("[5]", "expected a number of seconds > 0 (e.g. 10), got [5]"),
    (".inf", "Input should be a finite number (got inf)"),
])
def test_shutdown_timeout_errors_say_what_they_got(tmp_path, value, problem):
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, f"shutdown_timeout_s: {value}\n"), env={}, check_paths=False)
    assert problems(ei) == [f"shutdown_timeout_s: {problem}"]
    assert load_config(write(tmp_path, "shutdown_timeout_s: '2.5'\n"), env={}, check_paths=False).shutdown_timeout_s == 2.5


def test_dry_run_exit_codes(fakewatch_bin, tmp_path, bundle_dir):
    env = {"PATH": "/usr/bin:/bin", "CAM_PASSWORD": "hunter2", "FAKEWATCH_WEBHOOK_TOKEN": "tok-987"}
    ok = subprocess.run(
        [str(fakewatch_bin), "run", "-c", str(EXAMPLE), "--dry-run", "--set", f"bundle.path={bundle_dir}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    resolved = yaml.safe_load(ok.stdout)
    assert resolved["streams"][0]["id"] == "lobby"
    assert resolved["bundle"]["path"] == str(bundle_dir)
    assert "hunter2" not in ok.stdout and "tok-987" not in ok.stdout
    assert resolved["sinks"]["webhook"]["headers"]["Authorization"] == "***"

    bad = subprocess.run(
        [str(fakewatch_bin), "run", "-c", str(EXAMPLE), "--dry-run", "--set", "http.prot=1", "--set", f"bundle.path={tmp_path}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert bad.returncode == 2
    assert "http.prot: unknown key" in bad.stderr
    assert "is not a model bundle" in bad.stderr
    assert bad.stdout == ""


def test_docs_list_every_key_of_the_service_sections():
    from daemon.config import reference_rows

    doc = (REPO / "docs" / "configuration.md").read_text()
    others = ("streams[].source.", "stream_defaults.", "faces.", "pipeline.", "kafka.")
    missing = [k for k, *_ in reference_rows() if not k.startswith(others) and f"`{k}`" not in doc]
    assert missing == []


def test_docs_reference_table_matches_the_code():
    """Every row `reference_markdown()` generates from the models (key, type, default, description) is
    in docs/configuration.md verbatim: a changed default or description cannot drift from the docs."""
    from daemon.config import reference_markdown

    doc = (REPO / "docs" / "configuration.md").read_text()
    rows = [line for line in reference_markdown().splitlines() if line.startswith("| `")]
    assert len(rows) > 100
    assert [r for r in rows if r not in doc] == []


def test_logs_are_one_json_line_with_credentials_redacted():
    import io
    import json
    import logging

    from daemon.logging import setup_logging

    buf = io.StringIO()
    handler = setup_logging("info", "json", stream=buf)
    try:
        log = logging.getLogger("fakewatch.test")
        log.info("opening %s", "rtsp://admin:hunter2@127.0.0.1/cam?token=abc123&x=1",
                 extra={"headers": {"Authorization": "Bearer zzz"}, "stream": "cam1"})
        log.warning("multi\nline")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2
    rec = json.loads(lines[0])
    assert rec["level"] == "info" and rec["logger"] == "fakewatch.test" and rec["stream"] == "cam1"
    assert rec["msg"] == "opening rtsp://admin:***@127.0.0.1/cam?token=***&x=1"
    assert rec["headers"] == {"Authorization": "***"}
    assert "hunter2" not in buf.getvalue() and "abc123" not in buf.getvalue() and "zzz" not in buf.getvalue()
    assert json.loads(lines[1])["msg"] == "multi\nline"


def test_duplicate_ids_reported_beside_other_stream_errors(tmp_path):
    p = write(tmp_path, "streams:\n  - {id: a, url: 'rtsp://127.0.0.1/a'}\n  - {id: a, url: 'ftp://127.0.0.1/b'}\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p, env={}, check_paths=False)
    assert problems(ei)[0] == "streams: duplicate stream id(s): a"
    assert problems(ei)[1].startswith("streams.1.url: unsupported url scheme 'ftp'")
