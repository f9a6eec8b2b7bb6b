"""Static checks of deploy/kubernetes/: every core resource against the Kubernetes schemas
(kubernetes-validate, strict), KEDA's ScaledObject (no core schema) by its shape, and the pieces
that must agree with each other: names, ports, the pooler path and the metric names."""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from sqlalchemy import make_url

from jobs.connection import redis_settings_from_url
from worker.metrics import QUEUE_GAUGE_NAMES
from worker.readiness import READY_TIMEOUT_S
from worker.settings import load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = REPO_ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.37.0"
# Custom resources: no core schema exists, so each is checked by a test below instead.
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject")}
# The queue gauges of /work/shared/DESIGN.md "Metrics" that autoscaling may read.
QUEUE_GAUGES = ("orderworker_queue_oldest_ready_age_seconds", "orderworker_queue_ready_jobs")


def resources() -> list[dict[str, Any]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    return found


def resource(kind: str, name: str) -> dict[str, Any]:
    matches = [r for r in resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name} in deploy/kubernetes/"
    return matches[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def pgbouncer_ini() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read_string(resource("ConfigMap", "pgbouncer-config")["data"]["pgbouncer.ini"])
    return parser


@pytest.mark.parametrize(
    "manifest", resources(), ids=lambda r: f"{r['kind']}/{r['metadata']['name']}"
)
def test_every_core_resource_is_valid_against_the_kubernetes_schema(
    manifest: dict[str, Any],
) -> None:
    if (manifest["apiVersion"], manifest["kind"]) in CUSTOM_KINDS:
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):  # checked by shape instead
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        return
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_the_worker_runs_non_root_with_probes_and_requests() -> None:
    deployment = resource("Deployment", "orderworker-worker")
    pod = deployment["spec"]["template"]["spec"]
    worker = container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
    # Liveness reads a local file only: an outage of PostgreSQL or Redis never restarts a pod.
    assert worker["livenessProbe"]["exec"]["command"] == ["orderworker", "health", "--live"]
    assert worker["readinessProbe"]["exec"]["command"] == ["orderworker", "health", "--ready"]
    assert worker["readinessProbe"]["timeoutSeconds"] > READY_TIMEOUT_S
    assert {"cpu", "memory"} <= worker["resources"]["requests"].keys()
    assert pod["terminationGracePeriodSeconds"] > 25  # worker.shutdown_grace_s drains first
    sources = {next(iter(ref.values()))["name"] for ref in worker["envFrom"]}
    assert sources == {"orderworker-settings", "orderworker-secrets"}


def test_each_pod_migrates_the_schema_before_its_replica_starts() -> None:
    deployment = resource("Deployment", "orderworker-worker")
    [migrate] = deployment["spec"]["template"]["spec"]["initContainers"]
    worker = container(deployment)
    assert migrate["args"] == ["db", "upgrade"]
    assert (migrate["image"], migrate["envFrom"]) == (worker["image"], worker["envFrom"])


def test_the_worker_reaches_postgresql_through_pgbouncer_in_transaction_mode() -> None:
    settings = resource("ConfigMap", "orderworker-settings")["data"]
    secret = resource("Secret", "orderworker-secrets")["stringData"]
    service = resource("Service", "pgbouncer")
    database = make_url(secret["ORDERWORKER_DATABASE_URL"])
    assert database.host == service["metadata"]["name"]
    assert database.port == service["spec"]["ports"][0]["port"]
    assert settings["ORDERWORKER_DATABASE__STATEMENT_CACHE_SIZE"] == "0"
    ini = pgbouncer_ini()
    assert ini["pgbouncer"]["pool_mode"] == "transaction"
    assert int(ini["pgbouncer"]["listen_port"]) == database.port
    assert database.database in ini["databases"]
    pods = resource("Deployment", "pgbouncer")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pods.items()


def test_the_worker_reaches_redis_through_sentinel() -> None:
    secret = resource("Secret", "orderworker-secrets")["stringData"]
    redis = redis_settings_from_url(secret["ORDERWORKER_REDIS_URL"])
    assert redis.sentinel
    assert redis.sentinel_master


def test_the_scaled_object_scales_the_worker_on_a_queue_gauge() -> None:
    scaled = resource("ScaledObject", "orderworker-worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "orderworker-worker"
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "prometheus"
    metadata = trigger["metadata"]
    assert {"serverAddress", "query", "threshold"} <= metadata.keys()
    assert any(gauge in metadata["query"] for gauge in QUEUE_GAUGES)
    float(metadata["threshold"])  # KEDA takes it as a string holding a number


def test_the_largest_scale_fits_pgbouncer() -> None:
    """maxReplicaCount replicas, each with its full pool, are all served by one PgBouncer."""
    scaled = resource("ScaledObject", "orderworker-worker")["spec"]
    settings = resource("ConfigMap", "orderworker-settings")["data"]
    clients = scaled["maxReplicaCount"] * int(settings["ORDERWORKER_DATABASE__POOL_SIZE"])
    assert clients <= int(pgbouncer_ini()["pgbouncer"]["max_client_conn"])


def test_the_metrics_port_is_the_one_the_pods_declare() -> None:
    deployment = resource("Deployment", "orderworker-worker")
    settings = resource("ConfigMap", "orderworker-settings")["data"]
    ports = {port["name"]: port["containerPort"] for port in container(deployment)["ports"]}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert ports["metrics"] == int(annotations["prometheus.io/port"])
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(settings["ORDERWORKER_WORKER__METRICS_PORT"]) == ports["metrics"]


def test_the_scaled_object_reads_a_gauge_the_replicas_serve() -> None:
    query = resource("ScaledObject", "orderworker-worker")["spec"]["triggers"][0]["metadata"]
    assert set(QUEUE_GAUGES) <= set(QUEUE_GAUGE_NAMES)  # worker/metrics.py serves them
    assert any(gauge in query["query"] for gauge in QUEUE_GAUGE_NAMES)


def test_the_configmap_passes_only_settings_the_worker_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker refuses an unknown or invalid setting at start: the manifests must not ship one."""
    for name, value in resource("ConfigMap", "orderworker-settings")["data"].items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.database.statement_cache_size == 0
