"""Templates end to end with the real controller: a config file from a ConfigMap's template
(an edit of the ConfigMap reaches the Secret within one interval), a TLS pair, and a template
error reported with its field and position while the Secret keeps its data."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from tests.fakecloud import FakeCloud
from tests.integration.conftest import K8s
from tests.waiting import wait_for

CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


def test_templates_render_and_follow_their_config_map(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    cloud.put_secret("db", "pw1")
    cloud.put_secret("tls", json.dumps({"crt": CERT, "key": KEY}))
    k8s.access_key_store(namespace)
    k8s.core.create_namespaced_config_map(namespace, {
        "metadata": {"name": "app-templates"},
        "data": {"app.ini": "[db]\npassword = {{ .password }}\n"}})
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "3s",
                     "--min-refresh-interval", "1s")
    store = {"name": "store"}
    k8s.create(namespace, "externalsecrets", {
        "kind": "ExternalSecret", "metadata": {"name": "config"},
        "spec": {"data": [{"key": "db", "name": "password", "secretStoreRef": store}],
                 "target": {"template": {"templateFrom": [{"configMap": {
                     "name": "app-templates", "items": [{"key": "app.ini"}]}}]}}}})
    k8s.create(namespace, "externalsecrets", {
        "kind": "ExternalSecret", "metadata": {"name": "tls"},
        "spec": {"data": [{"key": "tls", "name": "bundle", "secretStoreRef": store}],
                 "target": {"template": {"type": "kubernetes.io/tls", "data": {
                     "tls.crt": "{{ (.bundle | fromJson).crt }}",
                     "tls.key": "{{ (.bundle | fromJson).key }}"}}}}})
    wait_for(lambda: k8s.secret_data(namespace, "config") == {
        "app.ini": "[db]\npassword = pw1\n"}, what="config file rendered")
    wait_for(lambda: k8s.secret_data(namespace, "tls") == {"tls.crt": CERT, "tls.key": KEY},
             what="TLS pair rendered")
    assert k8s.secret(namespace, "tls").type == "kubernetes.io/tls"
    k8s.core.patch_namespaced_config_map("app-templates", namespace, {
        "data": {"app.ini": "[database]\npassword = {{ .password }}\n"}})
    wait_for(lambda: k8s.secret_data(namespace, "config") == {
        "app.ini": "[database]\npassword = pw1\n"}, timeout=15,
        what="the ConfigMap edit rendered within an interval")
    cloud.put_secret("db", "pw2")
    wait_for(lambda: k8s.secret_data(namespace, "config") == {
        "app.ini": "[database]\npassword = pw2\n"}, timeout=15, what="the KMS change rendered")
    # A broken template: reported with its field and position; the Secret keeps its data.
    k8s.core.patch_namespaced_config_map("app-templates", namespace, {
        "data": {"app.ini": "{{ .nope }}"}})
    wait_for(lambda: (k8s.ready(namespace, "config") or {}).get("reason") == "InvalidSecret",
             timeout=15, what="the template error reported")
    message = (k8s.ready(namespace, "config") or {})["message"]
    assert "ConfigMap app-templates key app.ini" in message and "line 1" in message
    assert "pw2" not in message
    assert k8s.secret_data(namespace, "config") == {"app.ini": "[database]\npassword = pw2\n"}


def test_derived_and_short_values_never_reach_logs_events_or_status(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    """Values a template derives (upper-cased, base64, inside a config file) and values too
    short for substring redaction (the log filter catches them only as whole words) are kept
    out of every message by construction."""
    marker = "mrkderived7f3a"
    cloud.put_secret("long", marker)
    cloud.put_secret("short", "Zq7")
    k8s.access_key_store(namespace)
    proc = start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1h",
                            "--log-level", "debug")
    store = {"name": "store"}
    k8s.create(namespace, "externalsecrets", {
        "kind": "ExternalSecret", "metadata": {"name": "derived"},
        "spec": {"data": [{"key": "long", "name": "l", "secretStoreRef": store},
                          {"key": "short", "name": "s", "secretStoreRef": store}],
                 "target": {"template": {"data": {
                     "up": "{{ .l | upper }}", "b64": "{{ .l | b64enc }}",
                     "cfg": "user={{ .s }}\npass={{ .l }}\n",
                     "broken": "{{ .s | b64dec }}"}}}}})
    wait_for(lambda: (k8s.ready(namespace, "derived") or {}).get("reason") == "InvalidSecret",
             what="the broken template reported")
    k8s.patch(namespace, "externalsecrets", "derived", {"spec": {"target": {"template": {
        "data": {"broken": None}}}}})
    wait_for(lambda: (k8s.secret_data(namespace, "derived") or {}).get("up") == marker.upper(),
             what="derived values written")
    forms = [marker, marker.upper(), base64.b64encode(marker.encode()).decode(), "Zq7",
             "user=Zq7"]
    status = str(k8s.get(namespace, "externalsecrets", "derived")["status"])
    events = " ".join(f"{e.reason} {e.message}" for e in k8s.events(namespace, "derived"))
    proc.stop()
    for text in (status, events, proc.log):
        for form in forms:
            assert form not in text, form
