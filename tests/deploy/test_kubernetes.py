"""deploy/kubernetes.yaml against the Kubernetes API schemas (kubernetes-validate ships
them, so no cluster and no kubectl are needed), plus what the manifest promises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# Both in the test extra; a venv made before they were added skips until `make install`.
yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes.yaml"


def documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


def by_kind(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in documents() if doc["kind"] == kind]
    return found


@pytest.mark.parametrize("version", ["1.30.0", kubernetes_validate.latest_version()])
def test_every_document_is_valid_for_the_api_strictly(version: str) -> None:
    docs = documents()
    assert {doc["kind"] for doc in docs} == {"Service", "StatefulSet"}
    for doc in docs:
        # strict: an unknown or misspelt field fails too, not only a wrong type.
        kubernetes_validate.validate(doc, version, strict=True)


def test_only_the_dht_and_grpc_ports_are_in_the_service() -> None:
    ports = {(p["port"], p["protocol"]) for p in by_kind("Service")["spec"]["ports"]}
    assert ports == {(8468, "UDP"), (50051, "TCP")}


def test_peers_join_through_the_first_pod_and_keep_their_state() -> None:
    stateful = by_kind("StatefulSet")["spec"]
    (container,) = stateful["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    service = by_kind("Service")["metadata"]["name"]
    assert env["KADSHARE_BOOTSTRAP"] == f"{stateful['serviceName']}-0.{service}:8468"
    assert container["readinessProbe"]["httpGet"]["path"] == "/status"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == "/data"
    assert [t["metadata"]["name"] for t in stateful["volumeClaimTemplates"]] == ["data"]
    assert stateful["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
