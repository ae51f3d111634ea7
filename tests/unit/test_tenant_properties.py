"""Property-based tests (hypothesis): whatever a tenant writes that the CRD admits, parsing
raises nothing but SpecError, and a reconcile with a fake Kubernetes and a fake KMS never
raises, always reports a Ready condition, never shows a secret value in status or Events,
and never changes a Secret it refused or a key that a user owns."""

from __future__ import annotations

import base64
import contextlib
import copy
import gc
import json
import tracemalloc
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from controller import api, gotemplate
from controller.providers import FetchError, Kind
from tests import shaped
from tests.fakes import World

MARKER = "Zq9MARKERx"
VALUES = {
    "db": f"plain-{MARKER}",
    "json": json.dumps({"user": f"u-{MARKER}", "pass": f"p-{MARKER}",
                        "nested": {"a": 1, "b": [1, 2]}, "k-1": f"k{MARKER}"}),
    "yaml": f"user: y-{MARKER}\nlist: [1, 2]\n",
}

DURATION = r"(0|([0-9]{1,20}(\.[0-9]{1,3})?(ms|s|m|h)){1,3})"
KEY = st.from_regex(r"[-._a-zA-Z0-9]{1,12}", fullmatch=True)
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
               max_size=20)

jmes_items = st.lists(st.fixed_dictionaries({
    "path": st.one_of(st.sampled_from(["user", "pass", "nested.a", "nested.b[0]", "[0]",
                                       "bad[[", "`x`", "keys(@)", "*"]), TEXT.filter(bool)),
    "objectAlias": KEY,
}), max_size=3)

data_entry = st.fixed_dictionaries(
    {"key": st.sampled_from(["db", "json", "yaml", "missing", "denied", "flaky"])},
    optional={
        "name": KEY,
        "versionStage": st.sampled_from(["ACSCurrent", "ACSPrevious", ""]),
        "secretStoreRef": st.sampled_from([{"name": "store"}, {"name": "absent"},
                                           {"name": "store", "kind": "ClusterSecretStore"}]),
        "jmesPath": jmes_items,
        "kmsEndpoint": st.sampled_from(["https://kms.cn-hangzhou.aliyuncs.com",
                                        "http://evil.example", "127.0.0.1:1"]),
    })

data_process = st.fixed_dictionaries({"extract": data_entry}, optional={
    "replaceRule": st.lists(st.fixed_dictionaries({
        "source": st.one_of(st.sampled_from(["^", "-", "(?<n>u)", "[[:alpha:]]+", "\\Qa.b\\E",
                                             "(", "a{2,", "\\p{L}"]), TEXT.filter(bool)),
        "target": st.one_of(TEXT, st.sampled_from(["$1", "${n}_x", "$$"])),
    }), max_size=3),
})

spec = st.fixed_dictionaries({}, optional={
    "data": st.lists(data_entry, min_size=1, max_size=4),
    "dataProcess": st.lists(data_process, max_size=2),
    "type": st.sampled_from(["Opaque", "kubernetes.io/tls", "kubernetes.io/dockerconfigjson"]),
    "refreshInterval": st.from_regex(DURATION, fullmatch=True),
    "target": st.fixed_dictionaries({}, optional={
        # Mostly Secrets that exist already: a user's, and another ExternalSecret's.
        "name": st.sampled_from(["app", "users", "taken", "users", "taken"]),
        "creationPolicy": st.sampled_from(["Owner", "Merge", "Orphan", "Merge"]),
        "deletionPolicy": st.sampled_from(["Delete", "Retain"]),
        "template": st.fixed_dictionaries({}, optional={"metadata": st.fixed_dictionaries(
            {}, optional={
                "labels": st.dictionaries(st.sampled_from(
                    ["app", "app.kubernetes.io/managed-by", "alibabacloud.com/merge-target"]),
                    st.sampled_from(["x", "Helm", "ack-secret-manager"]), max_size=2),
                "annotations": st.dictionaries(st.sampled_from(
                    ["note", "alibabacloud.com/external-secret-uid",
                     "x.merge.alibabacloud.com/owned-keys"]), st.sampled_from(["y"]),
                    max_size=2)})}),
    }),
}).filter(lambda s: bool(s.get("data") or s.get("dataProcess")))  # the CRD's CEL rule


def _world() -> World:
    w = World()
    w.kms.values.update(VALUES)
    w.kms.fail["denied"] = FetchError(Kind.DENIED, "Forbidden.NoPermission", "denied")
    w.kms.fail["flaky"] = FetchError(Kind.THROTTLED, "Throttling", "Throttling: slow down")
    w.kube.put_user_secret(w.ns, "users", {"mine": "user-value"})
    w.add_es("owner-of-taken", {"data": [{"key": "db", "secretStoreRef": {"name": "store"}}],
                                "target": {"name": "taken"}})
    w.reconcile("owner-of-taken")
    return w


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=spec)
def test_any_admitted_spec_reconciles_safely(spec: dict[str, Any]) -> None:
    w = _world()
    before = copy.deepcopy(w.kube.secrets)
    w.add_es("app", spec)
    for _ in range(2):  # a first sync, then a repeat on the state it left
        outcome = w.reconcile("app")
        status = w.kube.statuses[(w.ns, "app")]
        assert [c["type"] for c in status["conditions"]] == ["Ready"]
        assert outcome.result in ("synced", "unchanged", "failed", "conflict", "invalid")
        shown = json.dumps(status) + json.dumps(w.kube.events)
        assert MARKER not in shown
        assert base64.b64encode(MARKER.encode()).decode()[:8] not in shown
        if outcome.result in ("conflict", "invalid"):
            assert w.kube.secrets == before
    # A user's key and another ExternalSecret's Secret are never changed.
    assert (w.kube.data(w.ns, "users") or {}).get("mine") == "user-value"
    assert w.kube.secrets[(w.ns, "taken")] == before[(w.ns, "taken")]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(obj=st.dictionaries(st.sampled_from(["metadata", "spec", "status"]), json_values))
def test_parse_raises_only_spec_errors_on_any_json(obj: dict[str, Any]) -> None:
    for parse in (shaped.parse_external_secret, shaped.parse_store):
        with contextlib.suppress(api.SpecError):
            parse(obj)


@settings(max_examples=300, deadline=None)
@given(text=st.from_regex(DURATION, fullmatch=True))
def test_every_admitted_interval_is_bounded_or_refused(text: str) -> None:
    bounds = api.IntervalBounds(minimum=10.0, maximum=3600.0)
    obj = {"metadata": {"name": "a", "namespace": "n"},
           "spec": {"refreshInterval": text, "data": [{"key": "k"}]}}
    try:
        es = shaped.parse_external_secret(obj, bounds)
    except api.SpecError as exc:
        assert exc.field == "spec.refreshInterval"
        return
    seconds = es.spec.refresh_interval
    assert seconds is not None
    assert seconds == 0 or bounds.minimum <= seconds <= bounds.maximum
    assert bool(es.notices) == (seconds in (bounds.minimum, bounds.maximum)
                                and api.parse_duration(text) != seconds)


# ---- templates composed from the interpreter's own functions stay within the budget ----

PROPERTY_BUDGET = 2 << 20
# What one render may allocate beyond its budget: the interpreter's frames, the exception
# that stops it, regex and tracemalloc bookkeeping. Over 300 generated templates at 64 KiB,
# 512 KiB and 2 MiB budgets the peak never exceeded the bytes reserved (the estimates are
# upper bounds), and over the hostile cases of test_gotemplate by at most 3.3 KiB. The
# inputs are made before the render and are not counted.
PROPERTY_OVERHEAD = 256 << 10
_UNBOUNDED = gotemplate.Limits(max_output_bytes=1 << 40, max_steps=None,
                               max_range_iterations=10**9)

# A value to start from, steps that double (or worse) what $x holds, and a last step that
# formats everything: the shapes of issue 18's hostile templates, combined at random.
_START = ["list .v", ".v", "list .v .v .v", 'split "," .w', "(dict \"a\" .v)", 'toLines .w']
_DOUBLERS = [
    "concat (toStrings $x) (toStrings $x)", "list $x $x", 'printf "%v%v" $x $x',
    "cat $x $x", "repeat 3 (toString $x)", 'join "," (toStrings $x)', "quote $x",
    "toJson $x", "sortAlpha (toStrings $x)", 'split "" (toString $x)', "b64enc (toString $x)",
    "toStrings $x", 'dict "a" $x "b" $x', "values (dict \"a\" $x \"b\" $x)",
    'print $x $x', 'squote $x $x', "toPrettyJson $x", 'indent 4 (toString $x)',
    "append (toStrings $x) (toString $x)", "uniq (concat (toStrings $x) (toStrings $x))",
]
_FINAL = ["{{ $x }}", "{{ toYaml $x }}", "{{ len (toString $x) }}", "{{ range $x }}{{ . }}"
          "{{ end }}", '{{ join "" (toStrings $x) }}', "{{ toJson $x | b64enc }}",
          '{{ printf "%q" (toString $x) }}']


@st.composite
def doubling_templates(draw: st.DrawFn) -> str:
    body = "".join("{{ $x = " + draw(st.sampled_from(_DOUBLERS)) + " }}"
                   for _ in range(draw(st.integers(1, 3))))
    loops = draw(st.integers(1, 40))
    nested = draw(st.booleans())
    loop = ("{{ range " + str(loops) + " }}" + body + "{{ end }}") if not nested else (
        "{{ range 6 }}{{ range " + str(loops) + " }}" + body + "{{ end }}{{ end }}")
    return ("{{ $x := " + draw(st.sampled_from(_START)) + " }}" + loop
            + draw(st.sampled_from(_FINAL)))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(template=doubling_templates(), value=st.sampled_from(["x", "pw" * 50, "\u4e2d\u00e9"]))
def test_any_doubling_template_stays_within_the_sync_budget(template: str, value: str) -> None:
    budget = gotemplate.SyncBudget(PROPERTY_BUDGET, 2_000_000)
    data = {"v": value, "w": ",".join([value] * 20)}
    gc.collect()
    tracemalloc.start()
    try:
        gotemplate.render(template, data, name="t", limits=_UNBOUNDED, budget=budget)
        event("rendered")
    except gotemplate.TemplateError as error:
        # refused: by the budget, or a type error of the random composition
        event("over budget" if error.budget is not None else "refused otherwise")
    finally:
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= PROPERTY_BUDGET + PROPERTY_OVERHEAD, (template, peak)
    assert budget.bytes <= PROPERTY_BUDGET and budget.steps <= 2_000_000
