"""Templates (spec.target.template) through the reconciler with plain fakes: the shapes of
ack-secret-manager v0.6's and External Secrets Operator's documented examples (a config file,
a registry credential, a TLS pair), Replace and Merge, templateFrom from a ConfigMap, a Secret
and a literal, metadata templates, and every failure keeping the Secret's data."""

from __future__ import annotations

import base64
import gc
import json
import time
import tracemalloc
from typing import Any

import pytest

from controller.externalsecret import render as render_mod
from controller.goflags import FlagError
from controller.providers import FetchError, Kind
from controller.settings import load
from tests.fakes import World, entry

NS = "team"
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


def _world(**values: str) -> World:
    w = World()
    w.kms.values.update(values)
    return w


def _es(w: World, template: dict[str, Any], *entries: dict[str, Any], **target: Any) -> None:
    w.add_es("app", {"data": list(entries) or [entry("db", name="password")],
                     "target": {"template": template, **target}})


def test_a_config_file_from_a_data_template() -> None:
    w = _world(db="s3cr3t-value")
    _es(w, {"data": {"config.yaml": "database:\n  user: app\n  password: {{ .password }}\n"}})
    assert w.reconcile("app").ready
    assert w.kube.data(NS, "app") == {
        "config.yaml": "database:\n  user: app\n  password: s3cr3t-value\n"}


def test_a_registry_credential_built_with_dict_tojson_b64enc() -> None:
    w = _world(user="robot", token="t0ken")
    template = ('{{- $auth := printf "%s:%s" .user .token | b64enc -}}'
                '{{ dict "auths" (dict "registry.example.com" (dict "auth" $auth)) | toJson }}')
    _es(w, {"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": template}},
        entry("user", name="user"), entry("token", name="token"))
    outcome = w.reconcile("app")
    assert outcome.ready, w.message("app")
    config = json.loads(w.kube.data(NS, "app")[".dockerconfigjson"])  # type: ignore[index]
    assert base64.b64decode(config["auths"]["registry.example.com"]["auth"]) == b"robot:t0ken"
    assert w.kube.secrets[(NS, "app")]["type"] == "kubernetes.io/dockerconfigjson"


def test_a_tls_pair_from_one_json_secret() -> None:
    w = _world(tls=json.dumps({"crt": CERT, "key": KEY}))
    _es(w, {"type": "kubernetes.io/tls", "data": {
        "tls.crt": "{{ (.bundle | fromJson).crt }}", "tls.key": "{{ (.bundle | fromJson).key }}"}},
        entry("tls", name="bundle"))
    assert w.reconcile("app").ready, w.message("app")
    assert w.kube.data(NS, "app") == {"tls.crt": CERT, "tls.key": KEY}


def test_merge_policy_keeps_the_fetched_keys() -> None:
    w = _world(db="pw")
    _es(w, {"mergePolicy": "Merge", "data": {"dsn": "postgres://app:{{ .password }}@db"}})
    assert w.reconcile("app").ready
    assert w.kube.data(NS, "app") == {"password": "pw", "dsn": "postgres://app:pw@db"}


def test_template_from_a_config_map_a_secret_and_a_literal() -> None:
    w = _world(db="pw")
    w.kube.config_maps[(NS, "tpl")] = {"data": {
        "app.ini": "[db]\npassword = {{ .password }}\n",
        "env": "DB_PASSWORD={{ .password }}\nDB_USER=app\n"}}
    w.kube.put_user_secret(NS, "tpl-secret", {"note": "{{ .password | upper }}"})
    _es(w, {"templateFrom": [
        {"configMap": {"name": "tpl", "items": [
            {"key": "app.ini"}, {"key": "env", "templateAs": "KeysAndValues"}]}},
        {"secret": {"name": "tpl-secret", "items": [{"key": "note"}]}, "target": "Annotations"},
        {"literal": "team-{{ len .password }}", "target": "Labels"}]})
    outcome = w.reconcile("app")
    assert outcome.ready and outcome.recheck, w.message("app")
    assert w.kube.data(NS, "app") == {"app.ini": "[db]\npassword = pw\n",
                                      "DB_PASSWORD": "pw", "DB_USER": "app"}
    meta = w.kube.secrets[(NS, "app")]["metadata"]
    assert meta["annotations"]["note"] == "PW" and meta["labels"]["literal"] == "team-2"
    # The ConfigMap is edited: the next sync (the recheck) renders it again.
    w.kube.config_maps[(NS, "tpl")]["data"]["app.ini"] = "[db]\npw = {{ .password }}\n"
    w.reconcile("app")
    assert w.kube.data(NS, "app")["app.ini"] == "[db]\npw = pw\n"  # type: ignore[index]


def test_metadata_templates() -> None:
    w = _world(db="pw")
    _es(w, {"metadata": {"labels": {"length": "{{ len .password }}", "plain": "x"},
                         "annotations": {"hint": "{{ .password | sha256sum | trunc 8 }}"}}})
    assert w.reconcile("app").ready, w.message("app")
    labels = w.kube.secrets[(NS, "app")]["metadata"]["labels"]
    assert labels["length"] == "2" and labels["plain"] == "x"


def test_template_errors_name_the_field_and_position_never_a_value() -> None:
    w = _world(db="s3cr3t-value")
    _es(w, {"data": {"x": "{{ .missing }}"}})
    outcome = w.reconcile("app")
    assert (outcome.result, outcome.ready) == ("invalid", False)
    message = w.message("app")
    assert "spec.target.template.data.x" in message and "line 1" in message
    assert "s3cr3t" not in message and w.kube.secrets.get((NS, "app")) is None


def test_a_missing_config_map_is_named() -> None:
    w = _world(db="pw")
    _es(w, {"templateFrom": [{"configMap": {"name": "absent", "items": [{"key": "k"}]}}]})
    assert not w.reconcile("app").ready
    assert "ConfigMap absent" in w.message("app")


def test_a_failed_entry_keeps_the_templated_secret() -> None:
    w = _world(db="pw")
    _es(w, {"data": {"dsn": "db://{{ .password }}"}, "metadata": {
        "labels": {"len": "{{ len .password }}"}}})
    first = w.reconcile("app")
    assert first.ready
    w.kms.fail["db"] = FetchError(Kind.DENIED, "Forbidden.NoPermission", "denied")
    w.fetcher.drop(next(iter(first.requests)))
    assert not w.reconcile("app").ready
    assert w.kube.data(NS, "app") == {"dsn": "db://pw"}
    assert w.kube.secrets[(NS, "app")]["metadata"]["labels"]["len"] == "2"


def test_a_label_output_that_is_not_a_label_value_is_refused() -> None:
    w = _world(db="not a label value!")
    _es(w, {"metadata": {"labels": {"v": "{{ .password }}"}}})
    assert not w.reconcile("app").ready
    assert "not a valid label value" in w.message("app")
    assert "not a label value!" not in w.message("app")


# ---- one budget per sync; messages never carry content -------------------------------

DOUBLING = ('{{ $l := list .password }}{{ range 40 }}{{ $l = concat $l $l }}{{ end }}'
            '{{ join "," $l }}')


def _peak(call: Any) -> tuple[int, Any]:
    gc.collect()
    tracemalloc.start()
    try:
        result = call()
    finally:
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, result


def test_a_template_over_the_sync_budget_is_ready_false_and_the_secret_keeps_its_data() -> None:
    w = _world(db="s3cr3t-value")
    _es(w, {"data": {"password": "{{ .password }}"}})
    assert w.reconcile("app").ready
    w.update_spec("app", {"data": [entry("db", name="password")],
                          "target": {"template": {"data": {"password": DOUBLING}}}})
    peak, outcome = _peak(lambda: w.reconcile("app"))
    assert (outcome.ready, outcome.reason, outcome.retry) == (False, "BudgetExceeded", True)
    message = w.message("app")
    assert w.reason("app") == "BudgetExceeded"
    assert "spec.target.template.data.password" in message and "--sync-budget-" in message
    assert "s3cr3t" not in message
    assert ("app", "Warning", "BudgetExceeded", message) in w.kube.events
    assert w.kube.data(NS, "app") == {"password": "s3cr3t-value"}  # kept
    assert peak < w.settings.sync_budget_bytes + (1 << 20)


def test_the_budget_flags_set_the_sync_budget() -> None:
    w = World(["--polling-interval", "1h", "--sync-budget-bytes", "2097152",
               "--sync-budget-steps", "50000"])
    assert (w.reconciler.budget.max_bytes, w.reconciler.budget.max_steps) == (2 << 20, 50_000)
    w.kms.values["db"] = "pw"
    # each template alone fits (9,000 iterations of ~3 steps); together they do not
    _es(w, {"data": {f"x{i}": "{{ range 9000 }}{{ . }}{{ end }}" for i in range(4)}})
    assert not w.reconcile("app").ready
    assert w.reason("app") == "BudgetExceeded" and "--sync-budget-steps" in w.message("app")


@pytest.mark.parametrize("argv", [["--sync-budget-bytes", "1000"],
                                  ["--sync-budget-steps", "99"],
                                  ["--sync-budget-bytes=-1"]])
def test_a_budget_below_its_floor_is_refused_at_start(argv: list[str]) -> None:
    with pytest.raises(FlagError) as info:
        load(argv, {})
    assert argv[0].split("=")[0] in str(info.value)


def test_all_template_from_items_of_a_sync_share_one_budget() -> None:
    # The issue: 1,024 items of 24 characters, each 1 MiB of output, held at once.
    w = _world(db="pw")
    w.kube.config_maps[(NS, "big")] = {"data": {
        f"k{i}": '{{ repeat 1048000 "x" }}' for i in range(64)}}
    items = [{"key": f"k{i}"} for i in range(64)]
    _es(w, {"templateFrom": [{"configMap": {"name": "big", "items": items}}] * 16})
    peak, outcome = _peak(lambda: w.reconcile("app"))
    assert not outcome.ready and w.reason("app") == "BudgetExceeded", w.message("app")
    assert "spec.target.template.templateFrom[0].configMap.items[" in w.message("app")
    assert peak < w.settings.sync_budget_bytes + (1 << 20)


def test_output_keys_are_named_by_origin_and_hash_never_by_text() -> None:
    value = "user-4c0nn3ct/pass@db:5432"
    w = _world(db=value)
    w.kube.config_maps[(NS, "tpl")] = {"data": {"env": "OK=1\n{{ .password | upper }}=x\n"}}
    _es(w, {"templateFrom": [{"configMap": {"name": "tpl", "items": [
        {"key": "env", "templateAs": "KeysAndValues"}]}}]})
    assert not w.reconcile("app").ready
    message = w.message("app")
    assert "templateFrom[0].configMap.items[0] output line 2" in message
    assert "(output key #" in message
    for part in (value, value.upper(), value.upper()[:20], "4C0NN3CT"):
        assert part not in message
    assert all(part not in e[3] for e in w.kube.events for part in (value, value.upper()))


def test_template_from_secret_values_are_registered_with_the_redactor() -> None:
    w = _world(db="pw")
    seen: list[bytes] = []
    w.reconciler.on_value = seen.append
    w.kube.put_user_secret(NS, "conn", {"dsn": "postgres://app:hunter2@db/app"})
    _es(w, {"templateFrom": [{"secret": {"name": "conn", "items": [{"key": "dsn"}]}}]})
    assert w.reconcile("app").ready, w.message("app")
    assert b"postgres://app:hunter2@db/app" in seen


def test_a_yaml_alias_bomb_fails_its_entry_and_keeps_its_keys() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [" + ", ".join([f"*{chr(ord(c) - 1)}"] * 10) + "]\n" for c in "bcdefgh")
    w = _world(doc="z: ok\n")
    w.add_es("app", {"data": [entry("doc", name="v", jmesPath=[
        {"path": "z", "objectAlias": "z"}])], "target": {}})
    assert w.reconcile("app").ready, w.message("app")
    w.kms.values["bomb"] = bomb.replace("a: &a", "z: ok\na: &a")
    w.update_spec("app", {"data": [entry("bomb", name="v", jmesPath=[
        {"path": "z", "objectAlias": "z"}, {"path": "h", "objectAlias": "h"}])]})
    peak, outcome = _peak(lambda: w.reconcile("app"))
    assert not outcome.ready and w.reason("app") == "BudgetExceeded", w.message("app")
    assert "expanded size" in w.message("app")
    assert w.kube.data(NS, "app") == {"z": "ok"}
    assert peak < w.settings.sync_budget_bytes + (1 << 20)


def test_a_retry_with_the_same_inputs_does_not_spend_the_budget_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    w = _world(db="pw")
    w.kube.config_maps[(NS, "tpl")] = {"data": {"k": DOUBLING}}
    _es(w, {"templateFrom": [{"configMap": {"name": "tpl", "items": [{"key": "k"}]}}]})
    renders: list[int] = []
    real = render_mod.render
    monkeypatch.setattr(render_mod, "render", lambda *a, **k: renders.append(1) or real(*a, **k))
    assert not w.reconcile("app").ready and w.reason("app") == "BudgetExceeded"
    first = w.message("app")
    started = time.process_time()
    outcome = w.reconcile("app")  # the retry: same spec, values and ConfigMap
    assert time.process_time() - started < 0.05
    assert (outcome.reason, outcome.retry, w.message("app")) == ("BudgetExceeded", True, first)
    assert len(renders) == 1
    w.kube.config_maps[(NS, "tpl")]["data"]["k"] = "{{ .password }}"  # the input changes
    assert w.reconcile("app").ready and len(renders) == 2
    assert w.kube.data(NS, "app") == {"k": "pw"}
