"""ClusterExternalSecret decisions (controller/api/clusterexternalsecret.py and
controller/clusterexternalsecret/logic.py): parsing with
ack-secret-manager's field names, namespace selection, ownership, stale objects, status."""

from __future__ import annotations

from typing import Any

import pytest

from controller import api
from controller.api import clusterexternalsecret as ces_api
from controller.api import parse_cluster_external_secret as parse
from controller.clusterexternalsecret import logic as ces

UID = "0b7c9d4e-1111-2222-3333-444455556666"
ES_SPEC = {"data": [{"key": "db-password", "name": "pw", "secretStoreRef": {"name": "s"}}]}


def raw(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": ces.GROUP_VERSION, "kind": ces.KIND,
            "metadata": {"name": "shared", "uid": UID, "generation": 3},
            "spec": {"externalSecretSpec": ES_SPEC, **spec}}


def ns(name: str, terminating: bool = False, **labels: str) -> dict[str, Any]:
    out: dict[str, Any] = {"metadata": {"name": name, "labels": labels}}
    if terminating:
        out["status"] = {"phase": "Terminating"}
    return out


def everywhere(_name: str) -> bool:
    return True


NAMESPACES = [ns("a", team="x"), ns("b", team="y"), ns("c", team="x", tier="db"),
              ns("kube-system")]


def selected(spec: dict[str, Any], namespaces: list[dict[str, Any]] = NAMESPACES,
             allowed: Any = everywhere) -> tuple[str, ...]:
    return ces.select(parse(raw(**spec)), namespaces, allowed).namespaces


# ------------------------------------------------------------------ parsing


def test_ack_fields_are_parsed_and_the_name_defaults_to_the_objects() -> None:
    parsed = parse(raw(rotationInterval="1h",
                           externalSecretMetadata={"labels": {"app": "db"},
                                                   "annotations": {"note": "n"}}))
    assert (parsed.name, parsed.uid, parsed.generation) == ("shared", UID, 3)
    assert parsed.es_name == "shared"
    assert parsed.refresh == 3600.0
    assert parsed.labels == {"app": "db"} and parsed.annotations == {"note": "n"}
    assert parsed.es_spec == ES_SPEC
    assert parse(raw(externalSecretName="db", refreshTime="30s")).es_name == "db"
    assert parse(raw(refreshTime="30s")).refresh == 30.0
    assert parse(raw()).refresh is None


@pytest.mark.parametrize(("spec", "field"), [
    ({"externalSecretSpec": {}}, "spec.externalSecretSpec"),
    ({"externalSecretName": "Not_A_Name"}, "spec.externalSecretName"),
    ({"rotationInterval": "soon"}, "spec.rotationInterval"),
    ({"conditions": [{"namespaceRegexes": ["("]}]}, "spec.conditions[0].namespaceRegexes[0]"),
    ({"namespaceSelectors": [{"matchExpressions": [{"key": "k", "operator": "Near"}]}]},
     "spec.namespaceSelectors[0].matchExpressions[0].operator"),
    ({"namespaceSelector": {"matchExpressions": [{"key": "k", "operator": "In"}]}},
     "spec.namespaceSelector.matchExpressions[0].values"),
    ({"conditions": [{}] * (ces_api.MAX_CONDITIONS + 1)}, "spec.conditions"),
    ({"externalSecretMetadata": {"labels": {ces_api.OWNER_LABEL: "x"}}},
     f"spec.externalSecretMetadata.labels.{ces_api.OWNER_LABEL}"),
])
def test_bad_specs_name_the_field_and_the_fix(spec: dict[str, Any], field: str) -> None:
    body = raw(**{k: v for k, v in spec.items() if k != "externalSecretSpec"})
    if "externalSecretSpec" in spec:
        body["spec"]["externalSecretSpec"] = spec["externalSecretSpec"]
    with pytest.raises(api.SpecError) as err:
        parse(body)
    assert field in [e.field for e in err.value.errors]
    assert "ClusterExternalSecret shared" in str(err.value)


# ------------------------------------------------------------------ selection


def test_no_selector_selects_every_namespace_as_ack_does() -> None:
    assert selected({}) == ("a", "b", "c", "kube-system")


def test_conditions_selectors_and_the_eso_spelling_are_ored() -> None:
    assert selected({"conditions": [{"namespaceSelector": {"matchLabels": {"team": "x"}}}]}) \
        == ("a", "c")
    assert selected({"conditions": [{"namespaces": ["b"]}, {"namespaceRegexes": ["^kube-"]}]}) \
        == ("b", "kube-system")
    assert selected({"namespaceSelectors": [
        {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
        {"matchLabels": {"team": "y"}}]}) == ("b", "c")
    assert selected({"namespaceSelector": {"matchExpressions": [
        {"key": "team", "operator": "NotIn", "values": ["x"]}]}}) == ("b", "kube-system")
    assert selected({"namespaceSelector": {}}) == ("a", "b", "c", "kube-system")
    assert selected({"conditions": [{"namespaceSelector": {"matchLabels": {"team": "z"}}}]}) \
        == ()


def test_the_operators_namespace_flags_and_terminating_namespaces_are_honoured() -> None:
    assert selected({}, allowed=lambda n: n in ("a", "b")) == ("a", "b")
    assert selected({}, [ns("a"), ns("gone", terminating=True),
                         {"metadata": {"name": "going", "deletionTimestamp": "2024-01-01"}}]) \
        == ("a",)


def test_selection_is_bounded_by_name() -> None:
    many = [ns(f"n{i:04d}") for i in range(12)]
    sel = ces.select(parse(raw()), reversed(many), everywhere, limit=10)
    assert sel.namespaces == tuple(f"n{i:04d}" for i in range(10))
    assert sel.over_limit == ("n0010", "n0011")
    assert sel.matching == frozenset(f"n{i:04d}" for i in range(12))


# ------------------------------------------------------------------ ExternalSecrets


def test_the_desired_external_secret_is_owned_labelled_and_carries_the_spec() -> None:
    parsed = parse(raw(externalSecretName="db",
                           externalSecretMetadata={"labels": {"app": "db"}}))
    body = ces.desired(parsed, "a")
    meta = body["metadata"]
    assert (body["kind"], meta["name"], meta["namespace"]) == ("ExternalSecret", "db", "a")
    assert meta["labels"] == {"app": "db", ces_api.OWNER_LABEL: "shared"}
    assert meta["ownerReferences"] == [{"apiVersion": ces.GROUP_VERSION, "kind": ces.KIND,
                                        "name": "shared", "uid": UID, "controller": True}]
    assert body["spec"] == ES_SPEC
    assert ces.owned_by(body, UID)
    assert ces.up_to_date(body, body)


def test_only_an_owner_reference_to_the_uid_proves_ownership() -> None:
    labelled_only = {"metadata": {"labels": {ces_api.OWNER_LABEL: "shared"}}}
    other_owner = {"metadata": {"ownerReferences": [{"uid": "someone-else"}]}}
    assert not ces.owned_by(labelled_only, UID)
    assert not ces.owned_by(other_owner, UID)
    assert not ces.owned_by({"metadata": {"ownerReferences": [{"uid": ""}]}}, "")


def test_changes_are_noticed() -> None:
    parsed = parse(raw(externalSecretMetadata={"annotations": {"a": "1"}}))
    want = ces.desired(parsed, "a")
    edited = {**want, "spec": {"data": []}}
    unlabelled = {**want, "metadata": {**want["metadata"], "labels": {}}}
    extra = {**want, "metadata": {**want["metadata"],
                                  "labels": {**want["metadata"]["labels"], "more": "ok"}}}
    assert not ces.up_to_date(edited, want)
    assert not ces.up_to_date(unlabelled, want)
    assert ces.up_to_date(extra, want)  # others' labels are theirs


def test_an_apply_answer_with_other_writers_means_the_object_was_not_ours() -> None:
    mine = {"metadata": {"managedFields": [{"manager": ces.FIELD_MANAGER}]}}
    theirs = {"metadata": {"managedFields": [{"manager": ces.FIELD_MANAGER},
                                             {"manager": "kubectl-client-side-apply"}]}}
    assert ces.created_by_others(mine) == []
    assert ces.created_by_others(theirs) == ["kubectl-client-side-apply"]


def test_stale_external_secrets_are_ours_in_namespaces_or_names_no_longer_used() -> None:
    parsed = parse(raw(externalSecretName="db"))

    def es(namespace: str, name: str, uid: str = UID) -> dict[str, Any]:
        return {"metadata": {"namespace": namespace, "name": name, "uid": f"{namespace}-{name}",
                             "ownerReferences": [{"uid": uid}]}}

    sel = ces.Selection(("a", "b"), ("z",))
    owned = [es("a", "db"), es("b", "old-name"), es("c", "db"), es("z", "db"),
             es("d", "db", uid="another-ces")]
    assert ces.stale(parsed, owned, sel) == [("b", "old-name", "b-old-name"),
                                             ("c", "db", "c-db")]


# ------------------------------------------------------------------ status


def test_status_lists_namespaces_and_keeps_the_transition_time() -> None:
    ok = ces.Outcome(provisioned=["b", "a"])
    first = ces.status(ok, ces.Selection(("a", "b"), ()), generation=3, es_name="db",
                       now="2024-01-01T00:00:00Z")
    assert first["provisionedNamespaces"] == ["a", "b"] and first["failedNamespaces"] == []
    assert first["externalSecretName"] == "db" and first["observedGeneration"] == 3
    ready = first["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("True", "Provisioned")
    again = ces.status(ok, ces.Selection(("a", "b"), ()), generation=3, es_name="db",
                       now="2024-01-01T01:00:00Z", previous=first)
    assert again["conditions"][0]["lastTransitionTime"] == "2024-01-01T00:00:00Z"
    assert not ces.status_changed(first, again)

    failed = ces.Outcome(provisioned=["a"], failed={"b": ces.conflict_reason("b", "db")})
    bad = ces.status(failed, ces.Selection(("a", "b"), ()), generation=3, es_name="db",
                     now="2024-01-01T02:00:00Z", previous=first)
    assert bad["failedNamespaces"][0]["namespace"] == "b"
    assert "not created by this ClusterExternalSecret" in bad["failedNamespaces"][0]["reason"]
    assert (bad["conditions"][0]["status"], bad["conditions"][0]["reason"]) == \
        ("False", "NamespacesFailed")
    assert bad["conditions"][0]["lastTransitionTime"] == "2024-01-01T02:00:00Z"
    assert ces.status_changed(first, bad)


def test_status_of_too_many_namespaces_and_of_a_bad_spec() -> None:
    over = ces.status(ces.Outcome(provisioned=["a"]), ces.Selection(("a",), ("b",)),
                      generation=1, es_name="x", now="t")
    assert over["conditions"][0]["reason"] == "TooManyNamespaces"
    assert "at most" in over["conditions"][0]["message"]
    with pytest.raises(api.SpecError) as err:
        parse(raw(rotationInterval="soon"))
    invalid = ces.status(ces.Outcome(), None, generation=1, es_name="x", now="t",
                         invalid=err.value)
    assert invalid["conditions"][0]["reason"] == "InvalidSpec"
    assert "spec.rotationInterval" in invalid["conditions"][0]["message"]


def test_failed_namespaces_in_status_are_bounded() -> None:
    many = ces.Outcome(failed={f"n{i:04d}": "x" * 2000 for i in range(150)})
    out = ces.status(many, None, generation=1, es_name="x", now="t")
    assert len(out["failedNamespaces"]) == ces.MAX_FAILED_LISTED
    assert all(len(f["reason"]) <= ces.MAX_REASON for f in out["failedNamespaces"])


# ------------------------------------------------------------------ the loop's start-up probe


class FakeRest:
    """Answers the two start-up requests of the loop: discovery, then a list."""

    def __init__(self, resources: list[str], list_status: int = 200) -> None:
        self.resources = resources
        self.list_status = list_status
        self.paths: list[str] = []

    def get(self, path: str, **_query: Any) -> dict[str, Any]:
        from controller.kube.rest import ApiError

        self.paths.append(path)
        if path.endswith("/v1alpha1"):
            return {"resources": [{"name": r} for r in self.resources]}
        if self.list_status != 200:
            raise ApiError(self.list_status, "Forbidden")
        return {"items": []}


@pytest.mark.parametrize(("resources", "status", "expected"), [
    (["externalsecrets", "clusterexternalsecrets"], 200, True),
    (["externalsecrets"], 200, False),  # CRD not installed
    (["externalsecrets", "clusterexternalsecrets"], 403, False),  # chart value false: no RBAC
])
def test_the_loop_runs_only_with_the_crd_and_the_rbac(
        resources: list[str], status: int, expected: bool, caplog: Any) -> None:
    from controller.clusterexternalsecret.controller import ClusterExternalSecrets
    from controller.settings import Settings

    loop = ClusterExternalSecrets(Settings(), FakeRest(resources, status))  # type: ignore[arg-type]
    with caplog.at_level("INFO"):
        assert loop._available() is expected
    assert bool(caplog.records) is not expected  # one line saying why it does not run


def test_status_writes_of_owned_external_secrets_do_not_start_a_pass() -> None:
    from controller.clusterexternalsecret.controller import ClusterExternalSecrets
    from controller.settings import Settings

    loop = ClusterExternalSecrets(Settings(), FakeRest([]))  # type: ignore[arg-type]
    obj: dict[str, Any] = {"metadata": {
        "namespace": "a", "name": "db", "generation": 1, "labels": {ces_api.OWNER_LABEL: "shared"},
        "ownerReferences": [{"kind": ces.KIND, "name": "shared", "uid": UID}]}}
    loop._on_owned("ADDED", obj)
    assert loop.queue.get(timeout=0) == ("shared", "a")
    loop.queue.done(("shared", "a"))
    loop._on_owned("MODIFIED", {**obj, "status": {"refreshTime": "now"}})
    assert loop.queue.get(timeout=0) is None
    loop._on_owned("MODIFIED", {"metadata": {**obj["metadata"], "generation": 2}})
    assert loop.queue.get(timeout=0) == ("shared", "a")


class RecordingRest:
    """Records every request of a pass; the ExternalSecret it is asked for is missing (404)
    and an apply answers with the body, as the apiserver would for a create."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def get(self, path: str, **_query: Any) -> dict[str, Any]:
        from controller.kube.rest import ApiError

        self.calls.append(("GET", path))
        raise ApiError(404, "NotFound")

    def apply(self, path: str, body: dict[str, Any], manager: str,
              force: bool = True) -> dict[str, Any]:
        self.calls.append(("APPLY", path))
        meta = {**body["metadata"], "uid": "new", "managedFields": [{"manager": manager}]}
        return {**body, "metadata": meta}

    def request(self, method: str, path: str, **_kw: Any) -> dict[str, Any]:
        self.calls.append((method, path))
        return {}


def loop_with(status: dict[str, Any], namespaces: list[str], **spec: Any) -> Any:
    from controller.clusterexternalsecret.controller import ClusterExternalSecrets
    from controller.settings import Settings

    rest = RecordingRest()
    loop = ClusterExternalSecrets(Settings(), rest)  # type: ignore[arg-type]
    seed(loop.ces_informer, {**raw(**spec), "status": status})
    for name in namespaces:
        seed(loop.ns_informer, ns(name))
    return loop, rest


def seed(informer: Any, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    informer.finish_write(informer.begin_write(meta.get("namespace", ""), meta["name"]), obj)


def test_an_owned_object_a_tenant_changes_costs_only_its_own_namespace() -> None:
    """A tenant may label (and point ownerReferences of) any ExternalSecret in its namespace at
    a ClusterExternalSecret: the pass that follows looks at that namespace only."""
    spread = [f"n{i:03d}" for i in range(200)]
    loop, rest = loop_with({"provisionedNamespaces": spread}, spread)
    tenant_es = {"metadata": {"namespace": "n007", "name": "mine", "generation": 1,
                              "labels": {ces_api.OWNER_LABEL: "shared"},
                              "ownerReferences": [{"kind": ces.KIND, "name": "shared",
                                                   "uid": UID}]}}
    loop._on_owned("ADDED", tenant_es)
    key = loop.queue.get(timeout=0)
    assert key == ("shared", "n007")
    loop._namespace_pass(*key)
    touched = {path.split("/namespaces/")[1].split("/")[0] for _m, path in rest.calls}
    assert touched == {"n007"}, rest.calls  # our ExternalSecret there was missing: recreated
    assert ("APPLY", "/apis/alibabacloud.com/v1alpha1/namespaces/n007/externalsecrets/shared") \
        in rest.calls
    assert loop.queue.get(timeout=0) is None  # provisioned before and after: status unchanged


def test_a_namespace_pass_writes_nowhere_the_last_full_pass_did_not_provision() -> None:
    """Beyond the selection bound (or not yet seen by a full pass) a namespace stays as it is."""
    loop, rest = loop_with({"provisionedNamespaces": ["a"]}, ["a", "b"])
    loop._namespace_pass("shared", "b")
    assert rest.calls == []


def test_a_namespace_pass_that_changes_the_outcome_asks_for_one_full_pass() -> None:
    from controller.clusterexternalsecret.controller import ALL

    loop, rest = loop_with({"failedNamespaces": [{"namespace": "a", "reason": "conflict"}]},
                           ["a"])
    loop._namespace_pass("shared", "a")
    assert rest.calls  # written
    assert loop.queue.waiting_count() == 1  # the full pass that rewrites the status, delayed
    assert loop.queue.get(timeout=0) is None
    assert ("shared", ALL) in loop.queue._waiting


def test_conflicts_in_status_name_no_field_manager() -> None:
    """Field-manager names are chosen by whoever wrote the object: a tenant's text must not
    reach the cluster admin's status."""
    reason = ces.conflict_reason("team-a", "db")
    assert "team-a/db" in reason and "written by" not in reason


def test_an_external_secret_deleted_while_the_loop_creates_it_is_not_cached_again() -> None:
    """The ghost cache: a DELETED that the watch delivers while our create is in flight wins;
    the create's answer must not put the object back (the next pass then recreates it, instead
    of seeing a cached object that is gone until the next relist)."""
    loop, rest = loop_with({"provisionedNamespaces": ["a"]}, ["a"])
    owned = loop.owned_informers[""]
    real_apply = rest.apply

    def apply_then_deleted(path: str, body: dict[str, Any], manager: str,
                           force: bool = True) -> dict[str, Any]:
        result = real_apply(path, body, manager, force)
        owned._apply({"type": "DELETED", "object": {**result, "metadata": {
            **result["metadata"], "resourceVersion": "9"}}}, "9")
        return result

    rest.apply = apply_then_deleted  # type: ignore[method-assign]
    assert loop._ensure(parse(raw()), "a") == ""
    assert owned.get("a", "shared") is None


def test_a_pass_says_when_it_comes_back() -> None:
    """A full pass returns its Result to the runtime's loop: back at the rotationInterval when
    every namespace is provisioned, after backoff (at most the rotationInterval) when one
    failed; a namespace pass asks nothing of the loop."""
    from controller.clusterexternalsecret.controller import ALL
    from controller.kube.rest import ApiError
    from controller.runtime.controller import Result

    loop, rest = loop_with({}, ["a"], rotationInterval="1h")
    assert loop._reconcile(("shared", ALL)) == Result.after(3600.0)
    assert loop._reconcile(("shared", "a")) == Result()

    def refuse(*_a: Any, **_kw: Any) -> dict[str, Any]:
        raise ApiError(403, "Forbidden")

    rest.apply = refuse  # type: ignore[method-assign]
    seed(loop.ns_informer, ns("b"))
    assert loop._reconcile(("shared", ALL)) == Result.retry(cap=3600.0)


def test_a_namespace_pass_that_raises_is_retried_as_a_full_pass() -> None:
    from controller.clusterexternalsecret.controller import ALL

    loop, rest = loop_with({"provisionedNamespaces": ["a"]}, ["a"])

    def broken(*_a: Any, **_kw: Any) -> dict[str, Any]:
        raise RuntimeError("unexpected")

    rest.get = broken  # type: ignore[method-assign]
    loop.queue.add(("shared", "a"))
    key = loop.queue.get(timeout=0)
    loop.controller.process(key)
    loop.queue.done(key)
    assert list(loop.queue._waiting) == [("shared", ALL)]  # with backoff, not at once
    assert loop.queue.get(timeout=0) is None
