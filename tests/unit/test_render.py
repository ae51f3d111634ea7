"""Unit tests for controller.externalsecret.render: spec + fetched values -> Secret data, pure."""

from __future__ import annotations

import base64
import copy
import gc
import json
import time
import tracemalloc
from typing import Any

import pytest
import yaml

from controller.api import ExternalSecret, FetchKey
from controller.externalsecret.render import (
    DataType,
    EntryState,
    FetchedValue,
    FetchFailure,
    FetchResult,
    RenderResult,
    _expand,
    content_hash,
    ownership_from_json,
    ownership_to_json,
    render,
)
from controller.gotemplate import SyncBudget
from tests.shaped import parse_external_secret
from tests.unit.test_model import COMPAT_EXAMPLE

MARKER = "MARKER-s3cr3t-9f2c"


def es_of(spec: dict[str, Any]) -> ExternalSecret:
    return parse_external_secret({"metadata": {"name": "es", "namespace": "team"}, "spec": spec})


def fetch_key(name: str) -> FetchKey:
    return FetchKey("", "", "", "", name, "", "")


def values(**by_secret: str | bytes | FetchResult) -> dict[FetchKey, FetchResult]:
    """Fetch results keyed as entries without store refs or versions produce them."""
    out: dict[FetchKey, FetchResult] = {}
    for name, value in by_secret.items():
        result = value if isinstance(value, FetchedValue | FetchFailure) else FetchedValue(
            value, version_id="v7")
        out[fetch_key(name)] = result
    return out


def texts(result: RenderResult) -> dict[str, str]:
    return {k: v.decode() for k, v in result.data.items()}


def jmes_entry(*items: tuple[str, str], key: str = "doc") -> dict[str, Any]:
    return {"key": key, "jmesPath": [{"path": p, "objectAlias": a} for p, a in items]}


DOC = {"name": "Tom", "age": 30, "ratio": 1.5, "whole": 2.0, "admin": False,
       "friends": [{"name": "Lily", "tags": ["<a>", 1.0]}], "db": {"user": "u", "port": 5432}}


# ---------------------------------------------------------------- the compat example


def test_compat_example_renders_the_expected_keys() -> None:
    es = parse_external_secret(yaml.safe_load(COMPAT_EXAMPLE))
    fetched: dict[FetchKey, FetchResult] = {
        es.spec.fetch_keys[0]: FetchedValue(
            json.dumps({"name": "Tom", "friends": [{"name": "Lily"}]}), version_id="v1")}
    result = render(es, fetched)
    # data[0] with jmesPath: only the aliases; the extract: top-level keys, "name" renamed.
    assert texts(result) == {"name": "Tom", "friendname": "Lily", "alibabacloud": "Tom",
                             "friends": '[{"name":"Lily"}]'}
    assert result.ok
    assert [(e.entry_id, e.version_id, e.state) for e in result.entries] == [
        ("data[0]", "v1", EntryState.SYNCED), ("dataProcess[0].extract", "v1", EntryState.SYNCED)]
    assert result.ownership == {"data[0]": ["friendname", "name"],
                                "dataProcess[0].extract": ["alibabacloud", "friends"]}


# ---------------------------------------------------------------- plain and binary entries


def test_plain_entry_writes_the_whole_value_under_name() -> None:
    es = es_of({"data": [{"key": "db-pass", "name": "password"}, {"key": "token"}]})
    result = render(es, values(**{"db-pass": "hunter2", "token": b"t0k"}))
    assert result.data == {"password": b"hunter2", "token": b"t0k"}
    assert result.entries[0].version_id == "v7"
    assert result.entries[0].secret_name == "db-pass"


def test_binary_value_is_base64_decoded() -> None:
    raw = bytes(range(256))
    es = es_of({"data": [{"key": "keystore", "name": "ks.p12"}]})
    fetched = values(keystore=FetchedValue(base64.b64encode(raw).decode(), DataType.BINARY))
    assert render(es, fetched).data == {"ks.p12": raw}


def test_binary_value_that_is_not_base64_fails_the_entry() -> None:
    es = es_of({"data": [{"key": "keystore"}]})
    result = render(es, values(keystore=FetchedValue(f"{MARKER}!!", DataType.BINARY)))
    (failed,) = result.failed_entries
    assert failed.reason == "InvalidBinary"
    assert result.data == {}


def test_binary_value_can_feed_jmes_path() -> None:
    encoded = base64.b64encode(json.dumps({"user": "u"}).encode()).decode()
    es = es_of({"data": [jmes_entry(("user", "username"))]})
    result = render(es, values(doc=FetchedValue(encoded, DataType.BINARY)))
    assert texts(result) == {"username": "u"}


# ---------------------------------------------------------------- jmesPath


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("name", "Tom"),
        ("age", "30"),
        ("ratio", "1.5"),
        ("whole", "2"),
        ("admin", "false"),
        ("db", '{"port":5432,"user":"u"}'),
        ("friends[0]", '{"name":"Lily","tags":["\\u003ca\\u003e",1]}'),
        ("friends[*].name", '["Lily"]'),
        ("length(friends)", "1"),
    ],
)
def test_jmes_path_result_types_from_json(path: str, expected: str) -> None:
    es = es_of({"data": [jmes_entry((path, "out"))]})
    assert texts(render(es, values(doc=json.dumps(DOC)))) == {"out": expected}


def test_jmes_path_complex_results_from_yaml_are_yaml() -> None:
    es = es_of({"data": [jmes_entry(("db", "db"), ("name", "name"))]})
    result = render(es, values(doc=yaml.safe_dump(DOC)))
    assert texts(result) == {"db": "port: 5432\nuser: u\n", "name": "Tom"}


def test_jmes_path_writes_only_the_aliases() -> None:
    es = es_of({"data": [{"key": "doc", "name": "whole",
                          "jmesPath": [{"path": "name", "objectAlias": "n"}]}]})
    assert set(render(es, values(doc=json.dumps(DOC))).data) == {"n"}


@pytest.mark.parametrize("path", ["missing", "friends[5].name", "db.nothing"])
def test_jmes_path_without_a_match_fails_the_whole_entry(path: str) -> None:
    es = es_of({"data": [jmes_entry(("name", "name"), (path, "other"))]})
    result = render(es, values(doc=json.dumps({**DOC, "nothing": None})))
    (failed,) = result.failed_entries
    assert failed.reason == "JMESPathNoMatch"
    assert repr(path) in failed.message and "'other'" in failed.message
    assert result.data == {}


def test_jmes_path_null_value_is_a_failure() -> None:
    es = es_of({"data": [jmes_entry(("gone", "gone"))]})
    result = render(es, values(doc='{"gone": null}'))
    assert result.failed_entries[0].reason == "JMESPathNoMatch"


def test_jmes_path_on_plain_text_fails_clearly() -> None:
    es = es_of({"data": [jmes_entry(("name", "name"))]})
    result = render(es, values(doc="just a password"))
    assert result.failed_entries[0].reason == "NotAnObject"


def test_jmes_path_runtime_error_is_a_failure() -> None:
    es = es_of({"data": [jmes_entry(("abs(name)", "x"))]})
    result = render(es, values(doc=json.dumps({"name": MARKER})))
    (failed,) = result.failed_entries
    assert failed.reason == "JMESPathFailed"
    assert MARKER not in failed.message


# ---------------------------------------------------------------- extract and replaceRule


def extract(key: str = "doc", *rules: tuple[str, str], **more: Any) -> dict[str, Any]:
    return {"extract": {"key": key, **more},
            "replaceRule": [{"source": s, "target": t} for s, t in rules]}


def test_extract_json_object() -> None:
    es = es_of({"dataProcess": [extract()]})
    assert texts(render(es, values(doc=json.dumps(DOC)))) == {
        "name": "Tom", "age": "30", "ratio": "1.5", "whole": "2", "admin": "false",
        "friends": '[{"name":"Lily","tags":["\\u003ca\\u003e",1]}]',
        "db": '{"port":5432,"user":"u"}'}


def test_extract_yaml_keeps_yaml_12_scalars_as_written() -> None:
    document = ("host: db.local\nport: 5432\nenabled: on\npin: 0123\nsince: 2024-01-01\n"
                "at: 12:30\nflag: true\nempty:\nhex: 0x1F\nnested:\n  b: 2\n  a: [1, x]\n")
    es = es_of({"dataProcess": [extract()]})
    assert texts(render(es, values(doc=document))) == {
        "host": "db.local", "port": "5432", "enabled": "on", "pin": "0123",
        "since": "2024-01-01", "at": "12:30", "flag": "true", "empty": "null", "hex": "0x1F",
        "nested": "a:\n- 1\n- x\nb: 2\n"}


@pytest.mark.parametrize("document", ["[1, 2]", '"text"', "plain words", "42"])
def test_extract_needs_an_object(document: str) -> None:
    es = es_of({"dataProcess": [extract()]})
    assert render(es, values(doc=document)).failed_entries[0].reason == "NotAnObject"


def test_extract_with_jmes_path_uses_the_aliases_then_the_rules() -> None:
    es = es_of({"dataProcess": [extract("doc", ("^u", "db_u"), jmesPath=[
        {"path": "db.user", "objectAlias": "user"}])]})
    assert texts(render(es, values(doc=json.dumps(DOC)))) == {"db_user": "u"}


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([("^a$", "b"), ("^b$", "c")], {"c", "x"}),
        ([("^b$", "c"), ("^a$", "b")], {"b", "x"}),
        ([("^n.*e$", "alibabacloud")], {"a", "x"}),
    ],
)
def test_replace_rules_apply_in_order(rules: list[tuple[str, str]], expected: set[str]) -> None:
    es = es_of({"dataProcess": [extract("doc", *rules)]})
    result = render(es, values(doc='{"a": "1", "x": "2"}'))
    assert set(result.data) == expected


@pytest.mark.parametrize(
    ("source", "target", "key", "expected"),
    [
        ("^db_(.*)$", "$1", "db_user", "user"),
        ("^db_(.*)$", "${1}_x", "db_user", "user_x"),
        ("^(?P<svc>[a-z]+)-(?P<field>[a-z]+)$", "$field.$svc", "redis-pass", "pass.redis"),
        ("^(?<svc>[a-z]+)-pw$", "${svc}.password", "redis-pw", "redis.password"),
        ("^(a)$", "$1x", "a", ""),  # Go reads $1x as group "1x", which does not exist
        ("x*", "-", "abxd", "-a-b-d-"),  # Go skips the empty match right after "x"
        ("[.]", "_", "a.b.c", "a_b_c"),
        ("^n.*e$", "alibabacloud", "friends", "friends"),
    ],
)
def test_replace_rule_uses_go_semantics(source: str, target: str, key: str, expected: str) -> None:
    es = es_of({"dataProcess": [extract("doc", (source, target))]})
    result = render(es, values(doc=json.dumps({key: "v"})))
    if expected:
        assert result.data == {expected: b"v"}
    else:
        assert result.failed_entries[0].reason == "InvalidKey"  # the empty key


@pytest.mark.parametrize(
    ("template", "expected"),
    [("$$1", "$1"), ("$", "$"), ("${1", "${1"), ("\\1", "\\1"), ("$2", ""), ("${name}", "A"),
     ("$01", ""), ("a$1b", "a"), ("$1-$name", "A-A")],
)
def test_expand_follows_go_regexp_expand(template: str, expected: str) -> None:
    import re

    match = re.match(r"(?P<name>A)", "A")
    assert match is not None
    assert _expand(template, match) == expected


def test_invalid_key_after_processing_fails_the_entry_and_names_the_key_by_position() -> None:
    """The keys of an extracted document are the tenant's secret content: the message names
    a bad key by its position and a short hash, never by its text."""
    import hashlib

    es = es_of({"dataProcess": [extract()]})
    result = render(es, values(doc='{"good": "1", "hunter2/key": "2"}'))
    (failed,) = result.failed_entries
    assert failed.reason == "InvalidKey"
    digest = hashlib.sha256(b"hunter2/key").hexdigest()[:12]
    assert f"key #2 of the document (sha256 {digest}, 11 characters)" in failed.message
    assert "hunter2" not in failed.message and "replaceRule" in failed.message
    assert result.data == {}


def test_replace_rule_can_repair_invalid_keys() -> None:
    es = es_of({"dataProcess": [extract("doc", ("[^-._a-zA-Z0-9]", "_"))]})
    result = render(es, values(doc='{"bad/key": "2", "a b": "3"}'))
    assert result.data == {"bad_key": b"2", "a_b": b"3"}


# ---------------------------------------------------------------- ordering and duplicates


def test_later_entries_win_duplicate_keys() -> None:
    es = es_of({
        "data": [{"key": "first", "name": "k"}, {"key": "second", "name": "k"}],
        "dataProcess": [extract("third")],
    })
    result = render(es, values(first="1", second="2", third='{"k": "3", "j": "4"}'))
    assert result.data == {"k": b"3", "j": b"4"}
    assert result.ownership["data[0]"] == ["k"]  # still owned: it produced k


def test_data_is_sorted_and_deterministic() -> None:
    es = es_of({"dataProcess": [extract()]})
    result = render(es, values(doc='{"b": "1", "a": "2", "c": "3"}'))
    assert list(result.data) == ["a", "b", "c"]


# ---------------------------------------------------------------- failure never loses data


SPEC_WITH_THREE = {
    "data": [{"key": "plain", "name": "p"}, jmes_entry(("user", "u"), ("pass", "pw"))],
    "dataProcess": [extract("bulk")],
}
GOOD = {"plain": "P1", "doc": '{"user": "U1", "pass": "W1"}', "bulk": '{"x": "X1", "y": "Y1"}'}


def first_sync() -> tuple[ExternalSecret, RenderResult]:
    es = es_of(SPEC_WITH_THREE)
    result = render(es, values(**GOOD))
    assert texts(result) == {"p": "P1", "u": "U1", "pw": "W1", "x": "X1", "y": "Y1"}
    return es, result


@pytest.mark.parametrize("failing", ["plain", "doc", "bulk"])
def test_failed_entry_keeps_its_previous_keys(failing: str) -> None:
    es, before = first_sync()
    fresh = {k: v.replace("1", "2") for k, v in GOOD.items()}
    fresh[failing] = FetchFailure("Throttled", "KMS throttled the request")  # type: ignore[assignment]
    after = render(es, values(**fresh), before.data, before.ownership)
    (failed,) = after.failed_entries
    assert failed.reason == "Throttled"
    assert set(after.data) == set(before.data)
    for key in failed.keys:
        assert after.data[key] == before.data[key]
    assert after.ownership == before.ownership
    assert sum(v.endswith(b"2") for v in after.data.values()) == 5 - len(failed.keys)


def test_failure_keeps_keys_again_on_the_next_failure() -> None:
    es, before = first_sync()
    broken = values(**{**GOOD, "bulk": FetchFailure("NotFound")})
    once = render(es, broken, before.data, before.ownership)
    twice = render(es, broken, once.data, once.ownership)
    assert twice.data == before.data


def test_without_a_record_static_keys_are_kept() -> None:
    es, before = first_sync()
    broken = values(plain=FetchFailure("Denied"), doc=FetchFailure("Denied"), bulk=GOOD["bulk"])
    after = render(es, broken, before.data, previous_ownership=None)
    assert after.data == before.data
    assert after.ownership["data[0]"] == ["p"]
    assert after.ownership["data[1]"] == ["pw", "u"]


def test_without_a_record_a_failed_extract_keeps_every_unclaimed_key() -> None:
    es = es_of(SPEC_WITH_THREE)
    previous = {"p": b"old", "x": b"X0", "legacy": b"L0"}
    broken = values(**{**GOOD, "bulk": FetchFailure("NotFound")})
    after = render(es, broken, previous, previous_ownership=None)
    assert texts(after) == {"p": "P1", "u": "U1", "pw": "W1", "x": "X0", "legacy": "L0"}
    assert after.ownership["dataProcess[0].extract"] == ["legacy", "x"]
    assert after.failed_entries[0].keys == ("legacy", "x")


def test_without_a_record_a_failed_extract_with_jmes_path_keeps_its_renamed_aliases() -> None:
    es = es_of({"dataProcess": [extract("doc", ("^user$", "db_user"), jmesPath=[
        {"path": "user", "objectAlias": "user"}])]})
    previous = {"db_user": b"U0", "user": b"stale"}
    after = render(es, values(doc=FetchFailure("NotFound")), previous, previous_ownership=None)
    assert after.data == {"db_user": b"U0"}


def test_with_a_record_an_entry_it_does_not_list_keeps_nothing() -> None:
    es, before = first_sync()
    ownership = {k: v for k, v in before.ownership.items() if k != "data[0]"}
    broken = values(**{**GOOD, "plain": FetchFailure("NotFound")})
    after = render(es, broken, before.data, ownership)
    assert "p" not in after.data


def test_missing_fetch_result_is_a_failure_not_a_crash() -> None:
    es, before = first_sync()
    partial = {k: v for k, v in values(**GOOD).items() if k.secret_name != "plain"}
    after = render(es, partial, before.data, before.ownership)
    assert after.failed_entries[0].reason == "NotFetched"
    assert after.data == before.data


def test_render_does_not_change_its_inputs() -> None:
    es, before = first_sync()
    previous, ownership = dict(before.data), copy.deepcopy(before.ownership)
    render(es, values(**{**GOOD, "bulk": FetchFailure("NotFound")}), previous, ownership)
    assert previous == before.data and ownership == before.ownership


def test_ownership_record_round_trips_through_json() -> None:
    _, result = first_sync()
    text = ownership_to_json(result.ownership)
    assert json.loads(text) == result.ownership
    assert ownership_from_json(text) == result.ownership
    assert "P1" not in text


@pytest.mark.parametrize("text", [None, "", "not json", "[1]", '"x"'])
def test_unreadable_ownership_record_means_no_record(text: str | None) -> None:
    assert ownership_from_json(text) is None


# ---------------------------------------------------------------- no values in messages


FAILURES = [
    ({"data": [jmes_entry(("a", "a"))]}, f'{{"x": "{MARKER}", broken'),
    ({"data": [jmes_entry(("a", "a"))]}, f"{MARKER}: [unclosed"),
    ({"data": [jmes_entry(("missing", "a"))]}, json.dumps({"x": MARKER})),
    ({"data": [jmes_entry(("a", "a"))]}, MARKER),
    ({"dataProcess": [extract()]}, f"- {MARKER}"),
    ({"dataProcess": [extract()]}, f"{{{MARKER}"),
    ({"dataProcess": [extract()]}, json.dumps({"bad key": MARKER})),
    ({"data": [{"key": "doc", "name": "tls.crt"}], "type": "kubernetes.io/tls"}, MARKER),
    ({"data": [{"key": "doc", "name": ".dockerconfigjson"}],
      "type": "kubernetes.io/dockerconfigjson"}, f"{{{MARKER}"),
]


@pytest.mark.parametrize(("spec", "value"), FAILURES)
def test_messages_never_contain_secret_values(spec: dict[str, Any], value: str) -> None:
    result = render(es_of(spec), values(doc=value))
    assert result.failed_entries or result.problems  # the case does fail
    messages = [repr(e) for e in result.entries] + [str(p) for p in result.problems]
    assert not [m for m in messages if MARKER in m]


def test_reprs_hide_values() -> None:
    assert MARKER not in repr(FetchedValue(MARKER, version_id="v1"))
    result = render(es_of({"data": [{"key": "doc"}]}), values(doc=MARKER))
    assert result.data == {"doc": MARKER.encode()}
    assert MARKER not in repr(result)


# ---------------------------------------------------------------- Secret type checks


@pytest.mark.parametrize(
    ("secret_type", "keys", "problem"),
    [
        ("Opaque", [], False),
        ("kubernetes.io/tls", ["tls.crt", "tls.key"], False),
        ("kubernetes.io/tls", ["tls.crt"], True),
        ("kubernetes.io/dockerconfigjson", [".dockerconfigjson"], False),
        ("kubernetes.io/dockerconfigjson", ["config"], True),
        ("kubernetes.io/dockercfg", [".dockercfg"], False),
        ("kubernetes.io/basic-auth", ["username"], False),
        ("kubernetes.io/basic-auth", ["password"], False),
        ("kubernetes.io/basic-auth", ["user"], True),
        ("kubernetes.io/ssh-auth", ["ssh-privatekey"], False),
        ("kubernetes.io/ssh-auth", ["id_rsa"], True),
        ("kubernetes.io/service-account-token", ["token"], True),
        ("example.com/custom", [], False),
    ],
)
def test_secret_type_requirements(secret_type: str, keys: list[str], problem: bool) -> None:
    es = es_of({"type": secret_type, "data": [{"key": k, "name": k} for k in keys]})
    result = render(es, values(**dict.fromkeys(keys, "{}")))
    assert bool(result.problems) is problem
    if problem:
        assert result.problems[0].field == "spec.type"
        assert secret_type in str(result.problems[0])
        assert not result.ok


def test_type_from_template_is_checked_under_its_own_field() -> None:
    es = es_of({"data": [{"key": "tls.crt"}],
                "target": {"template": {"type": "kubernetes.io/tls"}}})
    (problem,) = render(es, values(**{"tls.crt": "C"})).problems
    assert problem.field == "spec.target.template.type"
    assert "tls.key" in problem.message


def test_type_problem_mentions_failed_entries() -> None:
    es = es_of({"type": "kubernetes.io/tls",
                "data": [{"key": "crt", "name": "tls.crt"}, {"key": "key", "name": "tls.key"}]})
    result = render(es, values(crt="C", key=FetchFailure("NotFound")))
    assert "data[1]" in str(result.problems[0])


def test_dockerconfigjson_must_be_json() -> None:
    es = es_of({"type": "kubernetes.io/dockerconfigjson",
                "data": [{"key": "cfg", "name": ".dockerconfigjson"}]})
    assert render(es, values(cfg='{"auths": {}}')).problems == ()
    assert "not valid JSON" in str(render(es, values(cfg="{oops")).problems[0])


def test_size_limit_is_reported() -> None:
    es = es_of({"data": [{"key": "big"}]})
    assert render(es, values(big="x" * (1024 * 1024))).problems == ()
    (problem,) = render(es, values(big="x" * (1024 * 1024 + 1))).problems
    assert "1 MiB" in problem.message


# ---------------------------------------------------------------- content_hash


def test_content_hash_ignores_ordering() -> None:
    one = content_hash({"a": b"1", "b": b"2"}, "Opaque", {"x": "1", "y": "2"}, {"p": "q"})
    two = content_hash({"b": b"2", "a": b"1"}, "Opaque", {"y": "2", "x": "1"}, {"p": "q"})
    assert one == two
    assert len(one) == 64 and int(one, 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        {"data": {"a": b"1", "b": b"3"}},
        {"data": {"a": b"1"}},
        {"data": {"a": b"1", "c": b"2"}},
        {"secret_type": "kubernetes.io/tls"},
        {"labels": {"x": "2"}},
        {"annotations": {"p": "r"}},
        {"annotations": {}},
    ],
)
def test_content_hash_changes_with_content(change: dict[str, Any]) -> None:
    base: dict[str, Any] = {"data": {"a": b"1", "b": b"2"}, "secret_type": "Opaque",
                            "labels": {"x": "1"}, "annotations": {"p": "q"}}
    assert content_hash(**base) != content_hash(**{**base, **change})


# ---------------------------------------------------------------- the sync's budget

BUDGET = 4 << 20
OVERHEAD = 256 << 10  # frames, exception objects, regex and tracemalloc bookkeeping


def _alias_bomb(levels: int) -> str:
    text = "z: ok\na: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefghijklmnop"[:levels]:
        text += f"{level}: &{level} [" + ", ".join([f"*{chr(ord(level) - 1)}"] * 10) + "]\n"
    return text


def _peak_render(spec: dict[str, Any], **fetched: str) -> tuple[int, RenderResult, Any]:
    budget = SyncBudget(BUDGET, 1_000_000)
    es = es_of(spec)
    gc.collect()
    tracemalloc.start()
    try:
        result = render(es, values(**fetched), budget=budget)
    finally:
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, result, budget


@pytest.mark.parametrize("shape", ["jmesPath", "extract"])
def test_a_yaml_alias_bomb_is_refused_at_its_expanded_size(shape: str) -> None:
    # The issue: 370 bytes in the tenant's own KMS secret became 21 MB of Secret data.
    bomb = _alias_bomb(7)
    assert len(bomb) < 400
    spec = ({"data": [jmes_entry(("z", "z"), ("g", "g"), key="bomb")]} if shape == "jmesPath"
            else {"dataProcess": [extract("bomb")]})
    peak, result, budget = _peak_render(spec, bomb=bomb)
    (failed,) = result.failed_entries
    assert failed.reason == "BudgetExceeded" and "expanded size" in failed.message
    assert "--sync-budget-bytes" in failed.message and "x, x" not in failed.message
    assert peak <= BUDGET + OVERHEAD and budget.bytes <= BUDGET


def test_a_few_aliases_are_fine() -> None:
    doc = "base: &b {user: u, port: 1}\nprod: {<<: *b, port: 2}\ncopy: *b\n"
    result = render(es_of({"data": [jmes_entry(("prod.port", "port"), ("copy.user", "u"))]}),
                    values(doc=doc))
    assert result.ok and texts(result) == {"port": "2", "u": "u"}


@pytest.mark.parametrize("path", [
    "|".join(["[@,@]"] * 40) + "|[]" * 39,  # 2^40 items when flattened
    "to_string(" + "|".join(["[@,@]"] * 40) + ")",  # the same, encoded
    "length(" + "|".join(["[@,@]"] * 40) + "|[][][][][][][][][][][][][][][][][][][][][])",
    "|".join(["[@,@]"] * 40) + " == " + "|".join(["[@,@]"] * 40),  # compared whole
    "|".join(["[@,@]"] * 40) + "|[*][*][*][*][*][*][*][*][*][*][*][*][*][*][*][*][*][*]",
    "sort_by(" + "|".join(["[@,@]"] * 30) + "|[][][][][][][][][][][][][][][][][][][][]"
    "|[][][][][][][][], &to_string(@))",
])
def test_a_jmes_path_that_multiplies_its_document_is_refused(path: str) -> None:
    started = time.process_time()
    peak, result, budget = _peak_render({"data": [jmes_entry((path, "out"))]},
                                        doc=json.dumps({"a": "x" * 100}))
    (failed,) = result.failed_entries
    assert failed.reason == "BudgetExceeded", failed.message
    assert peak <= BUDGET + OVERHEAD and budget.bytes <= BUDGET
    assert time.process_time() - started < 5  # not the minutes an unbounded walk takes
