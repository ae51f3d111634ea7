"""Unit tests for controller.externalsecret.reconciler through its Protocols, with plain fakes
(tests/fakes.py): who owns a Secret, what Merge may touch, races between creators, failures
that keep data, and unexpected errors that become the object's status instead of a crash."""

from __future__ import annotations

from controller.names import MANAGED_BY, MANAGER, MERGE_TARGET, OWNER_UID, field_manager
from controller.providers import FetchError, Kind
from tests.fakes import AK, World, entry

NS = "team"


def _spec(*entries: dict[str, object], **extra: object) -> dict[str, object]:
    return {"data": list(entries), **extra}


def test_owner_creates_the_secret_with_its_own_field_manager() -> None:
    w = World()
    w.kms.values["db"] = "pw"
    es = w.add_es("app", _spec(entry("db")))
    outcome = w.reconcile("app")
    assert (outcome.result, outcome.ready) == ("synced", True)
    assert w.kube.data(NS, "app") == {"db": "pw"}
    meta = w.kube.secrets[(NS, "app")]["metadata"]
    assert [r["uid"] for r in meta["ownerReferences"]] == [es["metadata"]["uid"]]
    assert meta["annotations"][OWNER_UID] == es["metadata"]["uid"]
    assert w.kube.applies == [("app", field_manager(es["metadata"]["uid"]), False)]
    # The next write over its own Secret may force (it repairs edits by people).
    w.kms.values["db"] = "pw2"
    w.reconciler.fetcher.drop(next(iter(outcome.requests)))
    w.reconcile("app")
    assert w.kube.applies[-1][2] is True
    assert w.kube.data(NS, "app") == {"db": "pw2"}


def test_labels_and_the_source_annotation_are_no_proof_of_ownership() -> None:
    w = World()
    w.kms.values["db"] = "pw"
    w.kube.put_user_secret(NS, "app", {"a": "mine"}, labels={MANAGED_BY: MANAGER},
                           annotations={"alibabacloud.com/external-secret": "app"})
    w.add_es("app", _spec(entry("db")))
    assert w.reconcile("app").result == "conflict"
    assert w.reason("app") == "SecretConflict"
    assert w.kube.data(NS, "app") == {"a": "mine"}
    assert w.kube.applies == []


def test_merge_writes_no_claim_and_keeps_a_helm_label() -> None:
    w = World()
    w.kms.values["db"] = "pw"
    w.kube.put_user_secret(NS, "chart", {"x": "helm"}, labels={MANAGED_BY: "Helm"})
    w.add_es("app", _spec(entry("db"), target={"name": "chart", "creationPolicy": "Merge"}))
    assert w.reconcile("app").ready
    secret = w.kube.secrets[(NS, "chart")]
    assert w.kube.data(NS, "chart") == {"x": "helm", "db": "pw"}
    assert secret["metadata"]["labels"] == {MANAGED_BY: "Helm", MERGE_TARGET: "true"}
    assert "ownerReferences" not in secret["metadata"]
    assert OWNER_UID not in secret["metadata"]["annotations"]
    assert w.kube.applies[-1][2] is False  # never forced


def test_merge_into_another_external_secrets_secret_is_a_conflict() -> None:
    w = World()
    w.kms.values.update(db="pw", other="theirs")
    w.add_es("owner", _spec(entry("db")))
    w.reconcile("owner")
    before = w.kube.secrets[(NS, "owner")]
    w.add_es("intruder", _spec(entry("other"), target={"name": "owner",
                                                        "creationPolicy": "Merge"}))
    assert w.reconcile("intruder").result == "conflict"
    assert "belongs to ExternalSecret team/owner" in w.message("intruder")
    assert w.kube.secrets[(NS, "owner")] == before
    assert [e[2] for e in w.kube.events if e[0] == "intruder"] == ["SecretConflict"]


def test_merge_then_owner_is_a_conflict_and_deletion_leaves_the_secret() -> None:
    w = World()
    w.kms.values["db"] = "pw"
    w.kube.put_user_secret(NS, "users", {"a": "mine"})
    es = w.add_es("app", _spec(entry("db"), target={"name": "users",
                                                     "creationPolicy": "Merge"}))
    w.reconcile("app")
    w.update_spec("app", _spec(entry("db"), target={"name": "users"}))
    assert w.reconcile("app").result == "conflict"
    w.kube.gc(es["metadata"]["uid"])  # the ExternalSecret is deleted
    assert w.kube.data(NS, "users") == {"a": "mine", "db": "pw"}


def test_two_merges_into_one_secret_keep_each_others_keys() -> None:
    w = World()
    w.kms.values.update(a="1", b="2")
    w.kube.put_user_secret(NS, "shared", {"own": "x"})
    for name, key in (("one", "a"), ("two", "b")):
        w.add_es(name, _spec(entry(key), target={"name": "shared", "creationPolicy": "Merge"}))
        assert w.reconcile(name).ready
    assert w.kube.data(NS, "shared") == {"own": "x", "a": "1", "b": "2"}
    # One of them drops its key: only its own key goes.
    w.kms.values["c"] = "3"
    w.update_spec("one", _spec(entry("c"), target={"name": "shared", "creationPolicy": "Merge"}))
    assert w.reconcile("one").ready
    assert w.kube.data(NS, "shared") == {"own": "x", "b": "2", "c": "3"}


def test_merge_never_overwrites_a_key_another_writer_owns() -> None:
    w = World()
    w.kms.values["db"] = "from-kms"
    w.kube.put_user_secret(NS, "users", {"db": "hand-made"})
    w.add_es("app", _spec(entry("db"), target={"name": "users", "creationPolicy": "Merge"}))
    outcome = w.reconcile("app")
    assert (outcome.result, outcome.retry) == ("conflict", True)
    assert 'owned by kubectl' in w.message("app")
    assert w.kube.data(NS, "users") == {"db": "hand-made"}


def test_two_creators_racing_one_wins_the_other_reports_the_conflict() -> None:
    w = World()
    w.kms.values.update(a="from-a", b="from-b")
    first = w.add_es("first", _spec(entry("a"), target={"name": "contested"}))
    w.add_es("second", _spec(entry("b"), target={"name": "contested"}))
    # Both read the cache before either wrote: the second's write meets the first's Secret.
    w.kube.hide_secrets = True
    assert w.reconcile("first").ready
    assert w.reconcile("second").result == "conflict"
    w.kube.hide_secrets = False
    assert w.kube.data(NS, "contested") == {"a": "from-a"}
    refs = w.kube.secrets[(NS, "contested")]["metadata"]["ownerReferences"]
    assert [r["uid"] for r in refs] == [first["metadata"]["uid"]]
    assert w.reason("second") == "SecretConflict"
    assert w.reconcile("second").result == "conflict"  # and stays refused


def test_the_shared_manager_of_earlier_releases_is_retired() -> None:
    w = World()
    w.kms.values["db"] = "pw"
    es = w.add_es("app", _spec(entry("db")))
    uid = es["metadata"]["uid"]
    # As an earlier release wrote it: one shared manager, labels as proof, a stale key.
    w.kube._apply({"metadata": {"name": "app", "namespace": NS,
                                "labels": {MANAGED_BY: MANAGER},
                                "annotations": {OWNER_UID: uid},
                                "ownerReferences": [{"uid": uid, "kind": "ExternalSecret",
                                                     "apiVersion": "alibabacloud.com/v1alpha1",
                                                     "name": "app", "controller": True}]},
                   "data": {"stale": "eA=="}}, MANAGER, force=True)
    assert w.reconcile("app").ready
    assert w.kube.released == [("app", MANAGER)]
    assert w.kube.data(NS, "app") == {"db": "pw"}  # the stale key went with the old manager


def test_a_failed_read_keeps_the_synced_keys() -> None:
    w = World()
    w.kms.values.update(a="1", b="2")
    w.add_es("app", _spec(entry("a"), entry("b")))
    w.reconcile("app")
    w.kms.fail["b"] = FetchError(Kind.DENIED, "Forbidden.NoPermission", "denied")
    w.fetcher.drop(next(r for r in w.fetcher._cache if r.name == "b"))
    outcome = w.reconcile("app")
    assert (outcome.result, outcome.retry) == ("failed", True)
    assert w.kube.data(NS, "app") == {"a": "1", "b": "2"}
    assert w.reason("app") == "AccessDenied"


def test_an_unexpected_error_becomes_the_objects_status_not_a_crash() -> None:
    w = World()
    w.kms.values["db"] = "pw"
    w.add_es("app", _spec(entry("db")))
    w.reconcile("app")

    def explode(_kind: object, _ns: str, _name: str) -> None:
        raise RuntimeError("a value that must not be shown: hunter2")

    w.resolver.stores = explode  # type: ignore[assignment]
    outcome = w.reconcile("app")
    assert (outcome.result, outcome.retry, outcome.reason) == ("failed", True, "InternalError")
    assert "RuntimeError" in w.message("app") and "hunter2" not in w.message("app")
    assert w.kube.data(NS, "app") == {"db": "pw"}
    assert [e[2] for e in w.kube.events][-1] == "InternalError"
    assert all("hunter2" not in e[3] for e in w.kube.events)


def test_an_interval_below_the_floor_is_raised_and_said_in_the_status() -> None:
    w = World(["--polling-interval", "1h", "--min-refresh-interval", "30s"])
    w.kms.values["db"] = "pw"
    w.add_es("app", _spec(entry("db"), refreshInterval="1ms"))
    outcome = w.reconcile("app")
    assert outcome.interval == 30.0
    assert "spec.refreshInterval (1ms) is shorter than the minimum 30s" in w.message("app")
    assert "--min-refresh-interval" in w.message("app")


def test_the_floor_follows_a_shorter_operator_default() -> None:
    w = World(["--polling-interval", "2s"])
    w.kms.values["db"] = "pw"
    w.add_es("app", _spec(entry("db"), refreshInterval="1s"))
    assert w.reconcile("app").interval == 2.0


def test_controller_identity_refused_outside_allowed_namespaces() -> None:
    w = World(["--polling-interval", "1h", "--controller-identity-namespaces", "platform"])
    w.kms.values["db"] = "pw"
    w.add_es("app", _spec(entry("db", store=None)))
    outcome = w.reconcile("app")
    assert outcome.result == "failed"
    assert w.reason("app") == "ControllerIdentityRefused"
    assert "namespace team" in w.message("app")
    assert w.kms.reads == []


def test_a_store_past_its_namespaces_private_cas_is_refused_and_keeps_what_it_synced() -> None:
    """--max-cas-per-namespace: an ExternalSecret whose store's CA has no place says so as its
    own reason (the store, the count, the flag), reads nothing, and its Secret keeps the data
    it synced while the CA had a place."""
    w = World(["--polling-interval", "1h", "--max-cas-per-namespace", "1"], alibaba=True)
    w.kms.values["db"] = "pw"
    instance = {"KMSAuth": AK, "endpoint": "kst-1.cryptoservice.kms.aliyuncs.com"}
    w.add_store("older", instance, created="2026-12-07T10:00:00Z")  # no CA yet
    w.add_store("newer", {**instance, "ca": "CA two"}, created="2026-12-07T10:00:05Z")
    w.add_es("app", _spec(entry("db", store="newer")))
    assert w.reconcile("app").result == "synced"
    reads = len(w.kms.reads)
    w.add_store("older", {**instance, "ca": "CA one"}, created="2026-12-07T10:00:00Z")
    outcome = w.reconcile("app")
    assert (outcome.result, outcome.retry) == ("failed", True)
    assert w.reason("app") == "PrivateCARefused"
    assert "SecretStore team/newer" in w.message("app")
    assert "already uses 1 distinct private CAs" in w.message("app")
    assert "--max-cas-per-namespace" in w.message("app")
    assert len(w.kms.reads) == reads  # refused before any read (or session)
    assert w.kube.data("team", "app") == {"db": "pw"}


def test_secret_intact_sees_drift_left_while_the_controller_was_down() -> None:
    w = World()
    w.kms.values.update(a="1", b="2")
    raw = w.add_es("app", _spec(entry("a"), entry("b")))
    w.reconcile("app")
    es = w.reconciler.parse(raw)
    assert w.reconciler.secret_intact(es)
    secret = w.kube.secrets[(NS, "app")]
    secret["data"]["a"] = "ZWRpdGVk"  # edited by hand
    assert not w.reconciler.secret_intact(es)
    del w.kube.secrets[(NS, "app")]
    assert not w.reconciler.secret_intact(es)


def test_a_merge_target_is_intact_by_its_own_keys_only() -> None:
    w = World()
    w.kms.values["db"] = "pw"
    w.kube.put_user_secret(NS, "users", {"mine": "x"})
    raw = w.add_es("app", _spec(entry("db"), target={"name": "users", "creationPolicy": "Merge"}))
    w.reconcile("app")
    es = w.reconciler.parse(raw)
    assert w.reconciler.secret_intact(es)
    w.kube.put_user_secret(NS, "users", {"mine": "changed"})  # the user's key: not drift
    assert w.reconciler.secret_intact(es)


def test_an_omitted_stage_and_acscurrent_are_one_read() -> None:
    w = World()
    w.kms.values["db"] = "pw"
    w.add_es("one", _spec(entry("db")))
    w.add_es("two", _spec(entry("db", versionStage="ACSCurrent")))
    first, second = w.reconcile("one"), w.reconcile("two")
    assert first.requests == second.requests
    assert w.kms.reads == ["db"]


def test_derived_values_are_handed_to_the_redactor() -> None:
    w = World()
    seen: list[bytes] = []
    w.reconciler.on_value = seen.append
    w.kms.values["json"] = '{"user": "derived-user-value", "n": 1}'
    w.add_es("app", _spec(entry("json", jmesPath=[{"path": "user", "objectAlias": "u"}])))
    w.reconcile("app")
    assert b"derived-user-value" in seen


def test_a_transient_fault_while_the_data_is_fresh_keeps_ready() -> None:
    w = World(["--polling-interval", "60s"])
    w.kms.values["db"] = "pw"
    w.add_es("app", _spec(entry("db")))
    request = next(iter(w.reconcile("app").requests))
    events = len(w.kube.events)
    w.kms.fail["db"] = FetchError(Kind.THROTTLED, "Throttling", "Throttling: slow down")
    w.clock.advance(90)  # the value is 90 s old: within two 60 s intervals
    outcome = w.reconciler.reconcile(NS, "app", fresh=True)
    assert (outcome.ready, outcome.degraded, outcome.retry) == (True, True, True)
    conditions = {c["type"]: c for c in w.kube.statuses[(NS, "app")]["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Degraded"]["status"] == "True"
    assert "Throttling" in conditions["Degraded"]["message"]
    assert len(w.kube.events) == events  # no Warning for a healthy object
    w.clock.advance(60)  # 150 s: older than two intervals
    w.fetcher.drop(request)
    outcome = w.reconciler.reconcile(NS, "app", fresh=True)
    assert (outcome.ready, outcome.degraded) == (False, False)
    conditions = {c["type"]: c for c in w.kube.statuses[(NS, "app")]["conditions"]}
    assert conditions["Ready"]["status"] == "False" and "Degraded" not in conditions
    assert w.kube.data(NS, "app") == {"db": "pw"}


def test_last_sync_time_moves_at_most_once_per_interval_on_quiet_syncs() -> None:
    w = World(["--polling-interval", "60s"])
    w.kms.values["db"] = "pw"
    w.add_es("app", _spec(entry("db")))
    w.reconcile("app")
    first = w.kube.statuses[(NS, "app")]["lastSyncTime"]
    writes = dict(w.kube.statuses)
    w.reconcile("app")
    assert w.kube.statuses == writes and w.kube.statuses[(NS, "app")]["lastSyncTime"] == first


def test_status_and_event_text_pass_the_redactor_too() -> None:
    w = World()
    w.reconciler.scrub = lambda text: text.replace("ak-secret", "***")
    w.kms.fail["db"] = FetchError(Kind.DENIED, "Forbidden.NoPermission",
                                  "Forbidden.NoPermission: ak-secret leaked by a bug")
    w.add_es("app", _spec(entry("db")))
    w.reconcile("app")
    assert "ak-secret" not in w.message("app") and "***" in w.message("app")
    assert all("ak-secret" not in e[3] for e in w.kube.events)


def _fail(w: World, name: str) -> None:
    w.kms.fail[name] = FetchError(Kind.DENIED, "Forbidden.NoPermission", "denied")
    for request in [r for r in w.fetcher._cache if r.name == name]:
        w.fetcher.drop(request)


CLEANUP = ["--polling-interval", "1h", "--cleanup-secret-on-failure"]


def test_cleanup_on_failure_deletes_the_secret_only_when_every_source_fails() -> None:
    w = World(CLEANUP)
    w.kms.values.update(a="1", b="2")
    w.add_es("app", _spec(entry("a"), entry("b")))
    w.reconcile("app")
    _fail(w, "b")  # a partial failure never deletes
    assert w.reconcile("app").result == "failed"
    assert w.kube.data(NS, "app") == {"a": "1", "b": "2"} and w.kube.deleted == []
    _fail(w, "a")  # now every source fails
    outcome = w.reconcile("app")
    assert (outcome.result, outcome.ready, outcome.retry) == ("failed", False, True)
    assert w.kube.deleted == ["app"] and (NS, "app") not in w.kube.secrets
    assert "Deleted Secret app" in w.message("app") and w.reason("app") == "AccessDenied"
    assert any(e[2] == "SecretDeleted" and e[1] == "Warning" for e in w.kube.events)
    # A source works again: the Secret comes back.
    w.kms.fail.clear()
    for request in list(w.fetcher._cache):
        w.fetcher.drop(request)
    assert w.reconcile("app").result == "synced"
    assert w.kube.data(NS, "app") == {"a": "1", "b": "2"}


def test_without_the_flag_a_total_failure_keeps_the_data() -> None:
    w = World()
    w.kms.values.update(a="1")
    w.add_es("app", _spec(entry("a")))
    w.reconcile("app")
    _fail(w, "a")
    assert w.reconcile("app").result == "failed"
    assert w.kube.data(NS, "app") == {"a": "1"} and w.kube.deleted == []


def test_cleanup_on_failure_never_deletes_a_merged_into_or_foreign_secret() -> None:
    w = World(CLEANUP)
    w.kms.values["a"] = "1"
    w.kube.put_user_secret(NS, "chart", {"x": "helm"}, labels={MANAGED_BY: "Helm"})
    w.add_es("merge", _spec(entry("a"), target={"name": "chart",
                                                  "creationPolicy": "Merge"}))
    w.reconcile("merge")
    _fail(w, "a")
    w.reconcile("merge")
    assert w.kube.data(NS, "chart") == {"x": "helm", "a": "1"} and w.kube.deleted == []
    # A Secret with the managed-by label but without this ExternalSecret's uid: not ours.
    w.kube.put_user_secret(NS, "other", {"k": "v"}, labels={MANAGED_BY: MANAGER})
    w.add_es("other", _spec(entry("a")))
    w.reconcile("other")
    assert w.kube.data(NS, "other") == {"k": "v"} and w.kube.deleted == []


def test_the_originals_template_example_works_unchanged() -> None:
    """ack-secret-manager's examples/template (target-locations-template): a managed-by
    label with its own name, as on every Secret the controller owns."""
    w = World()
    w.kms.values["app-version"] = "1.4.2"
    w.add_es("target-locations-template", {
        "provider": "kms",
        "data": [{"key": "app-version", "name": "version"}],
        "target": {"template": {
            "data": {"version": "{{ .version }}"},
            "metadata": {"annotations": {"app.kubernetes.io/version": "{{ .version }}"},
                         "labels": {MANAGED_BY: "ack-secret-manager"}}}}},
    )
    # No secretStoreRef: the controller's own identity (the worker role, on by default).
    outcome = w.reconcile("target-locations-template")
    assert outcome.ready, w.message("target-locations-template")
    secret = w.kube.secrets[(NS, "target-locations-template")]
    assert secret["metadata"]["labels"][MANAGED_BY] == MANAGER
    assert secret["metadata"]["annotations"]["app.kubernetes.io/version"] == "1.4.2"
    assert w.kube.data(NS, "target-locations-template") == {"version": "1.4.2"}


def test_another_managed_by_value_or_a_merge_is_refused_with_the_fix() -> None:
    w = World()
    w.add_es("helm", _spec(entry("db"), target={"template": {"metadata": {
        "labels": {MANAGED_BY: "Helm"}}}}))
    w.reconcile("helm")
    assert w.reason("helm") == "InvalidSpec" and "set it to ack-secret-manager" in \
        w.message("helm")
    w.kube.put_user_secret(NS, "chart", {"x": "helm"})
    w.add_es("merge", _spec(entry("db"), target={"name": "chart", "creationPolicy": "Merge",
                                                   "template": {"metadata": {"labels": {
                                                       MANAGED_BY: MANAGER}}}}))
    w.reconcile("merge")
    assert w.reason("merge") == "InvalidSpec" and "merged into" in w.message("merge")


def test_status_entries_carry_both_original_keys() -> None:
    w = World()
    w.kms.values["db"] = "pw"
    w.add_es("app", _spec(entry("db")))
    w.reconcile("app")
    results = w.kube.statuses[(NS, "app")]["dataSyncResults"]
    assert [(r["KMSSecretKey"], r["ExternalSecretKey"], r["status"]) for r in results] == [
        ("db", "db", "Synced")]


# ------------------------------------------------------------ reasons that name the problem


def _results(w: World, name: str) -> dict[str, dict[str, object]]:
    status = w.kube.statuses[(NS, name)]
    return {str(r["entry"]): r for r in status["dataSyncResults"]}


def test_bad_key_names_from_extract_are_invalid_secret_naming_every_key() -> None:
    w = World()
    w.kms.values["doc"] = '{"a b": "1", "c/d": "2", "ok": "3", "..x": "4"}'
    w.add_es("app", _spec(dataProcess=[{"extract": entry("doc")}]))
    outcome = w.reconcile("app")
    assert (outcome.ready, outcome.reason) == (False, "InvalidSecret")
    assert w.reason("app") == "InvalidSecret"  # not FetchFailed: KMS is fine
    message = w.message("app")
    for position in (1, 2, 4):  # by position and hash: the keys are the secret's content
        assert f"key #{position} of the document" in message, position
    assert "3 Secret keys" in message and "replaceRule" in message
    assert "#3" not in message and "c/d" not in message and "a b" not in message
    assert _results(w, "app")["dataProcess[0].extract"]["reason"] == "InvalidKey"


def test_a_jmes_path_that_matches_nothing_is_the_objects_reason() -> None:
    w = World()
    w.kms.values["doc"] = '{"name": "alice"}'
    w.add_es("app", _spec(entry("doc", jmesPath=[{"path": "missing", "objectAlias": "x"}])))
    assert w.reconcile("app").reason == "JMESPathNoMatch"
    assert w.reason("app") == "JMESPathNoMatch"
    assert "jmesPath 'missing'" in w.message("app")


def test_mixed_failures_stay_fetch_failed() -> None:
    w = World()
    w.kms.values["doc"] = '{"name": "alice"}'
    w.add_es("app", _spec(entry("doc", jmesPath=[{"path": "missing", "objectAlias": "x"}]),
                          entry("absent")))
    w.reconcile("app")
    assert w.reason("app") == "FetchFailed"


def test_an_entry_without_a_store_whose_worker_role_fails_says_it_names_no_store() -> None:
    w = World()
    assert w.settings.enable_worker_role  # ack-secret-manager's default
    w.kms.fail["db"] = FetchError(
        Kind.TRANSIENT, "WorkerRoleUnavailable", "WorkerRoleUnavailable: the ECS metadata "
        "service failed to give credentials for the node's ECS instance; will retry",
        own_identity=True)
    w.add_es("app", _spec(entry("db", store=None)))
    outcome = w.reconcile("app")
    assert (outcome.ready, outcome.reason) == (False, "FetchFailed")
    message = w.message("app")
    assert message.index("spec.data[0] has no secretStoreRef") < message.index(
        "WorkerRoleUnavailable")
    assert "set spec.data[0].secretStoreRef" in message
    # With a store, the message is the failure's alone.
    w2 = World()
    w2.kms.fail["db"] = w.kms.fail["db"]
    w2.add_es("app", _spec(entry("db")))
    w2.reconcile("app")
    assert "secretStoreRef" not in w2.message("app")


def test_over_the_secret_size_limit_no_entry_says_synced() -> None:
    w = World()
    w.kms.values.update(big="x" * (700 * 1024), also="y" * (400 * 1024), small="s")
    w.add_es("app", _spec(entry("big"), entry("also"), entry("small")))
    outcome = w.reconcile("app")
    assert (outcome.ready, outcome.reason) == (False, "InvalidSecret")
    assert "1 MiB" in w.message("app")
    results = _results(w, "app")
    assert {str(r["status"]) for r in results.values()} == {"Failed"}, results
    assert {str(r["reason"]) for r in results.values()} == {"InvalidSecret"}
    assert (NS, "app") not in w.kube.secrets  # nothing written


def test_a_refresh_interval_in_the_wrong_format_asks_for_a_go_duration() -> None:
    w = World()
    w.add_es("app", _spec(entry("db"), refreshInterval="1 hour"))
    assert w.reconcile("app").reason == "InvalidSpec"
    message = w.message("app")
    assert "spec.refreshInterval" in message and "a Go duration such as" in message
    assert "^" not in message and "[0-9]" not in message  # no regex
