"""deploy/: alert rules (promtool), Grafana dashboard, compose file, Kubernetes manifests, images."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics_core import Metric

from daemon.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
METRIC_RE = re.compile(r"\bfakewatch_[a-z0-9_]+")


def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("promtool missing in CI: .ci/run installs Debian's 'prometheus' package")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return exe


def exported_names() -> set[str]:
    """Every sample name the daemon's registry can export (families with no children included)."""
    names: set[str] = set()
    for fam in Metrics().registry.collect():
        fam: Metric
        base = fam.name
        suffixes = {
            "counter": ["_total", "_created"],
            "gauge": [""],
            "histogram": ["_bucket", "_sum", "_count", "_created"],
            "info": ["_info"],
        }[fam.type]
        names |= {base + s for s in suffixes}
    return names


def test_promtool_check_rules():
    r = subprocess.run([promtool(), "check", "rules", str(DEPLOY / "prometheus/alerts.yml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_rule_unit_tests():
    r = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yml"], capture_output=True, text=True, cwd=DEPLOY / "prometheus"
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_required_alerts_present():
    groups = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())["groups"]
    names = {r["alert"] for g in groups for r in g["rules"]}
    for needed in [
        "FakewatchStreamDown", "FakewatchNoFrames", "FakewatchDropRatioHigh", "FakewatchQueueSaturated",
        "FakewatchStageLatencyHigh", "FakewatchDeadLetters", "FakewatchConsumerLagGrowing",
        "FakewatchDeepfakeDetected", "FakewatchDeepfakeSpike", "FakewatchDeepfakeSustained",
    ]:
        assert needed in names


def test_rules_and_dashboard_use_only_exported_metrics():
    exported = exported_names()
    rules = (DEPLOY / "prometheus/alerts.yml").read_text()
    dash = json.loads((DEPLOY / "grafana/dashboards/fakewatch.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dash["templating"]["list"]]
    used = set(METRIC_RE.findall(rules)) | {m for e in exprs for m in METRIC_RE.findall(e)}
    assert used, "no fakewatch metrics referenced?"
    missing = sorted(used - exported)
    assert not missing, f"metrics used by rules/dashboard but not exported by the daemon: {missing}"


def test_dashboard_covers_the_operator_views():
    dash = json.loads((DEPLOY / "grafana/dashboards/fakewatch.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    for m in [
        "fakewatch_frames_received_total", "fakewatch_frames_analysed_total", "fakewatch_frames_dropped_total",
        "fakewatch_queue_depth", "fakewatch_queue_capacity", "fakewatch_batch_size_bucket",
        "fakewatch_stage_latency_seconds_bucket", "fakewatch_fake_score_bucket", "fakewatch_verdicts_total",
        "fakewatch_kafka_consumer_lag", "fakewatch_kafka_rebalances_total", "fakewatch_kafka_dead_letters_total",
        "fakewatch_stream_reconnects_total",
    ]:
        assert m in exprs, m
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["datasource"]["uid"] == "prometheus" for p in dash["panels"] if p["type"] != "row")


def test_compose_services_ports_and_mounts():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "fakewatch", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all interfaces"
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), f"{name} mounts missing {src}"
                assert vol.endswith(":ro"), f"{name} mounts {src} writable"
    fw = services["fakewatch"]
    assert (DEPLOY.parent / fw["build"]["dockerfile"]).is_file()
    assert fw["user"] != "root" and not fw["user"].startswith("0")
    prom = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    targets = [t for j in prom["scrape_configs"] for sc in j["static_configs"] for t in sc["targets"]]
    assert "fakewatch:9108" in targets


def test_compose_daemon_config_is_valid():
    from daemon.config import load_config

    cfg_path = DEPLOY / "config/fakewatch.compose.yaml"
    cfg = load_config(cfg_path, env={}, overrides=[], check_paths=False)
    assert cfg.kafka is not None


def test_images_run_as_non_root_with_healthcheck():
    for f in ["Dockerfile.cpu", "Dockerfile.gpu"]:
        text = (DEPLOY / "docker" / f).read_text()
        users = re.findall(r"^USER\s+(\S+)", text, re.M)
        assert users and users[-1] not in ("root", "0", "0:0"), f
        assert "HEALTHCHECK" in text and "/healthz" in text, f


def _k8s_docs() -> dict[str, dict]:
    docs = {}
    for p in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for d in yaml.safe_load_all(p.read_text()):
            if d:
                docs[f"{d['kind']}/{d['metadata']['name'] if 'metadata' in d else p.stem}"] = d | {"_file": p.name}
    return docs


def test_k8s_manifests_reference_each_other(tmp_path):
    docs = _k8s_docs()
    kust = yaml.safe_load((DEPLOY / "k8s/kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (DEPLOY / "k8s" / res).is_file(), res
    cm = docs["ConfigMap/fakewatch-config"]
    from daemon.config import load_config

    (tmp_path / "fw.yaml").write_text(cm["data"]["fakewatch.yaml"])
    cfg = load_config(tmp_path / "fw.yaml", env={}, check_paths=False)  # /models exists only in the pod
    assert cfg.kafka is not None and cfg.sinks.kafka
    svc = docs["Service/fakewatch"]
    for kind in ("Deployment/fakewatch", "StatefulSet/fakewatch"):
        wl = docs[kind]
        pod = wl["spec"]["template"]
        assert wl["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        c = pod["spec"]["containers"][0]
        port_names = {p["name"] for p in c["ports"]}
        assert svc["spec"]["ports"][0]["targetPort"] in port_names
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert c["resources"]["requests"]["nvidia.com/gpu"] == 1
        vols = {v["name"]: v for v in pod["spec"]["volumes"]}
        for m in c["volumeMounts"]:
            assert m["name"] in vols
        assert vols["config"]["configMap"]["name"] == "fakewatch-config"
    sm = docs["ServiceMonitor/fakewatch"]
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert docs["ScaledObject/fakewatch"]["spec"]["scaleTargetRef"]["name"] == "fakewatch"


def test_prometheusrule_matches_alert_file():
    docs = _k8s_docs()
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    assert docs["PrometheusRule/fakewatch"]["spec"] == rules
