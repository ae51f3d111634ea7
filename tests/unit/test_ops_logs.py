"""Logging: the two formats, and above all that no secret reaches the output.

Every test runs against a fresh root configuration that the `logging_state` fixture puts
back afterwards (handlers, levels, the SDK loggers, the exception hooks, the registry of
secret values), so these tests neither see nor leave global logging state.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import secrets
import sys
import threading
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.ops import redact
from controller.ops.logs import (
    SELF_CONFIGURED_LOGGERS,
    RedactingFilter,
    parse_level,
    setup_logging,
)
from controller.ops.redact import MIN_SECRET_LENGTH, REDACTED, Redactor, register_secret, scrub

_TOUCHED_LOGGERS = (*SELF_CONFIGURED_LOGGERS, "kubernetes.client.rest")
# A syntactically real JWT (header {"alg":"RS256","kid":"k"}, payload {"sub":"system:..."}).
JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ"
    ".eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a3ViZS1zeXN0ZW06YWNrIn0"
    ".c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
)


@pytest.fixture(autouse=True)
def logging_state() -> Iterator[None]:
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved = {
        name: (list(lg.handlers), lg.level, lg.propagate, list(lg.filters))
        for name in _TOUCHED_LOGGERS
        for lg in [logging.getLogger(name)]
    }
    hooks = (sys.excepthook, threading.excepthook)
    redact.default_redactor().clear()
    try:
        yield
    finally:
        root.handlers[:] = saved_root[0]
        root.setLevel(saved_root[1])
        for name, (handlers, level, propagate, filters) in saved.items():
            lg = logging.getLogger(name)
            lg.handlers[:], lg.filters[:] = handlers, filters
            lg.setLevel(level)
            lg.propagate = propagate
        sys.excepthook, threading.excepthook = hooks
        redact.default_redactor().clear()


def configure(fmt: str, level: str = "debug") -> io.StringIO:
    out = io.StringIO()
    setup_logging(fmt, level, stream=out)
    return out


def marker() -> str:
    return "MARKER-" + secrets.token_hex(8)


log = logging.getLogger("controller.test")


# -- formats -------------------------------------------------------------------------------


def test_json_line_carries_time_level_logger_message_and_extra_fields() -> None:
    out = configure("json")
    log.info("sync %s", "ns/name", extra={"object": "ns/name", "result": "synced",
                                          "duration_ms": 12})
    doc = json.loads(out.getvalue())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["time"])
    assert doc["level"] == "info"
    assert doc["logger"] == "controller.test"
    assert doc["message"] == "sync ns/name"
    assert (doc["object"], doc["result"], doc["duration_ms"]) == ("ns/name", "synced", 12)


def test_json_core_keys_win_over_fields_of_the_same_name() -> None:
    out = configure("json")
    log.warning("hello", extra={"level": "fake", "logger": "fake"})
    doc = json.loads(out.getvalue())
    assert (doc["level"], doc["logger"]) == ("warning", "controller.test")


def test_text_line_has_the_documented_shape() -> None:
    out = configure("text")
    log.info("sync %s", "ns/name", extra={"result": "synced", "duration_ms": 12})
    line = out.getvalue().rstrip("\n")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO  sync ns/name result=synced duration_ms=12",
        line,
    ), line


def test_text_quotes_field_values_that_would_be_ambiguous() -> None:
    out = configure("text")
    log.warning("x", extra={"reason": "not found", "empty": "", "keys": ["a", "b"]})
    assert 'WARN  x reason="not found" empty="" keys="[\\"a\\", \\"b\\"]"' in out.getvalue()


def test_text_appends_the_traceback_on_following_lines() -> None:
    out = configure("text")
    try:
        raise KeyError("gone")
    except KeyError:
        log.exception("lookup failed")
    first, *rest = out.getvalue().splitlines()
    assert first.endswith("ERROR lookup failed")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "KeyError: 'gone'"


# -- redaction of registered values ----------------------------------------------------------


def _log_with_secret_in(where: str, secret: str) -> None:
    if where == "message":
        log.info(f"value is {secret}")
    elif where == "args":
        log.info("value is %s", secret)
    elif where == "repr-args":
        log.info("value is %r", {"password": secret})
    elif where == "extra":
        log.info("value", extra={"data": secret})
    elif where == "nested-extra":
        log.info("value", extra={"data": {"keys": [secret]}})
    elif where == "exception":
        try:
            raise RuntimeError(f"request failed for {secret}")
        except RuntimeError:
            log.exception("sync failed")
    elif where == "stack":
        log.info("here %s", "x", stack_info=True, extra={"note": secret})


@pytest.mark.parametrize("fmt", ["json", "text"])
@pytest.mark.parametrize(
    "where", ["message", "args", "repr-args", "extra", "nested-extra", "exception", "stack"]
)
def test_registered_value_never_appears(fmt: str, where: str) -> None:
    out = configure(fmt)
    secret = marker()
    register_secret(secret)
    _log_with_secret_in(where, secret)
    text = out.getvalue()
    assert secret not in text
    assert REDACTED in text


def test_exception_is_still_reported_after_redaction() -> None:
    out = configure("json")
    secret = marker()
    register_secret(secret)
    try:
        raise RuntimeError(f"boom {secret}")
    except RuntimeError:
        log.exception("sync failed")
    doc = json.loads(out.getvalue())
    assert doc["exception"].endswith(f"RuntimeError: boom {REDACTED}")


@pytest.mark.parametrize(
    ("form", "encode"),
    [
        ("repr", lambda v: repr(v)),
        ("json", lambda v: json.dumps({"v": v})),
        ("url", lambda v: quote(v, safe="")),
        ("base64", lambda v: base64.b64encode(v.encode()).decode()),
    ],
)
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_escaped_and_encoded_forms_of_a_value_are_redacted(
    fmt: str, form: str, encode: Callable[[str], str]
) -> None:
    out = configure(fmt)
    secret = 'q"uo\\te/x+' + secrets.token_hex(4)  # each form spells it differently
    register_secret(secret)
    encoded = encode(secret)
    log.info("%s form: %s", form, encoded)
    text = out.getvalue()
    assert encoded not in text
    assert secret.rsplit("+", 1)[1] not in text  # not even the random tail
    assert REDACTED in text


def test_each_line_of_a_multiline_value_is_redacted() -> None:
    out = configure("text")
    key = f"-----BEGIN CERTIFICATE-----\nMIIB{secrets.token_hex(8)}\nQUJD{secrets.token_hex(8)}"
    register_secret(key)
    for line in key.splitlines()[1:]:
        log.info("line %s", line)
    assert out.getvalue().count(REDACTED) == 2
    assert all(line not in out.getvalue() for line in key.splitlines()[1:])


def test_bytes_values_are_registered_in_repr_and_base64_form() -> None:
    value = b"\x00\xffbinary-" + secrets.token_bytes(8)
    register_secret(value)
    assert scrub(f"data={value!r}").count(REDACTED) == 1
    assert repr(value)[2:-1] not in scrub(repr(value))
    assert base64.b64encode(value).decode() not in scrub(base64.b64encode(value).decode())


def test_short_values_are_redacted_in_logs_as_whole_words_only() -> None:
    redactor = Redactor()
    redactor.register("1234")
    redactor.register(b"ab-c")
    # Log lines: wherever the value stands on its own, whatever the punctuation around it.
    assert redactor.scrub_log("pin=1234, again '1234' (1234)") == \
        f"pin={REDACTED}, again '{REDACTED}' ({REDACTED})"
    assert redactor.scrub_log("x ab-c y") == f"x {REDACTED} y"
    # Not inside a longer word or number: ordinary text keeps its words.
    assert redactor.scrub_log("12345 01234 ab-cd xab-c 1234a") == \
        "12345 01234 ab-cd xab-c 1234a"
    # Status and Event text (scrub): short values are kept out by construction, not by a
    # word scrub that would garble the user's message.
    assert redactor.scrub("pin=1234") == "pin=1234"
    register_secret("abcdef")
    assert scrub("x abcdef y") == f"x {REDACTED} y"


def test_short_lines_of_a_long_value_are_not_words_to_hide() -> None:
    redactor = Redactor()
    redactor.register("[db]\nuser = app\npassword = s3cr3t-pass\nend\n")
    assert redactor.scrub_log("the end of [db] sync") == "the end of [db] sync"
    assert redactor.scrub_log("password = s3cr3t-pass") == REDACTED


def test_a_short_value_never_appears_in_a_log_line() -> None:
    out = configure("json")
    register_secret("7f3q")
    log.info("the pin is %s", "7f3q", extra={"note": ["7f3q"], "count": 7})
    try:
        raise ValueError("bad pin 7f3q")
    except ValueError:
        log.exception("failed")
    text = out.getvalue()
    assert "7f3q" not in text
    assert f"the pin is {REDACTED}" in text and f"bad pin {REDACTED}" in text
    assert f'"note":["{REDACTED}"]' in text
    assert '"count":7' in text  # numbers are not words to scrub


def test_a_short_value_does_not_eat_the_timestamp_and_single_characters_are_kept() -> None:
    out = configure("text")
    register_secret("12")
    register_secret("7")
    log.info("port 12 of 7")
    line = out.getvalue()
    assert f"port {REDACTED} of 7" in line
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", line), line


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=2, max_size=MIN_SECRET_LENGTH - 1).filter(
    lambda v: v.strip() == v and not set(v) & set("<>")))
def test_any_short_value_between_delimiters_is_redacted(value: str) -> None:
    redactor = Redactor()
    redactor.register(value)
    assert redactor.scrub_log(f"<{value}>") == f"<{REDACTED}>"


def test_overlapping_and_adjacent_values_are_replaced_once() -> None:
    redactor = Redactor()
    redactor.register("secretAAAA1234")
    redactor.register("AAAA1234zzzz")
    assert redactor.scrub("[secretAAAA1234zzzz]") == f"[{REDACTED}]"
    assert redactor.scrub("secretAAAA1234 and AAAA1234zzzz") == f"{REDACTED} and {REDACTED}"


def test_many_registered_values_are_all_found() -> None:
    redactor = Redactor()
    values = [secrets.token_urlsafe(18) for _ in range(3000)]
    for value in values:
        redactor.register(value)
    line = f"a={values[0]} b={values[1500]} c={values[-1]} d=not-a-secret"
    assert redactor.scrub(line) == f"a={REDACTED} b={REDACTED} c={REDACTED} d=not-a-secret"


def test_memory_is_bounded_and_a_reregistered_value_survives() -> None:
    redactor = Redactor(max_entries=8)  # two generations of 4 forms
    # Each of these plain ASCII tokens registers 2 forms: itself and its base64.
    a, b, c, d, e = (f"token-{name}-{secrets.token_hex(4)}" for name in "abcde")
    for value in (a, b, c):
        redactor.register(value)
    redactor.register(a)  # a is in the previous generation: registered again, now current
    redactor.register(d)
    redactor.register(e)  # rotates: the generation holding b is dropped
    assert len(redactor) <= 8
    assert b in redactor.scrub(b), "the oldest value should have aged out"
    assert a not in redactor.scrub(a), "the re-registered value should still be known"
    assert e not in redactor.scrub(e)


# -- redaction by shape ------------------------------------------------------------------------

PATTERN_CASES = [
    ("GET /?AccessKeyId=LTAIok&AccessKeySecret={s}&Action=GetSecretValue", "AccessKeyId=LTAIok"),
    ("https://sts.aliyuncs.com/?SecurityToken={s}&Format=JSON", "Format=JSON"),
    ("url=https://sts/?Action=AssumeRoleWithOIDC&OIDCToken={s}&RoleArn=acs:ram::1:role/r",
     "RoleArn=acs:ram::1:role/r"),
    ("string to sign is:GET&%2F&AccessKeyId%3DLTAIok%26OIDCToken%3D{s}%26Timestamp%3D1",
     "Timestamp%3D1"),
    ("GET&%2F&SecurityToken%3D{s}%252Bmore%26SignatureMethod%3DHMAC-SHA1", "HMAC-SHA1"),
    ("/?Signature={s}&SignatureNonce=1", "SignatureNonce=1"),
    ('{{"AccessKeySecret": "{s}", "AccessKeyId": "LTAIok"}}', '"AccessKeyId": "LTAIok"'),
    ('{{"SecurityToken":"{s}","Expiration":"2026"}}', '"Expiration":"2026"'),
    ('{{\\"AccessKeySecret\\":\\"{s}\\"}}', "{"),
    ("Credentials(access_key_id='LTAIok', access_key_secret='{s}')", "access_key_id='LTAIok'"),
    ("> x-acs-security-token : {s}\n> host : kms.cn-hangzhou.aliyuncs.com", "> host : kms"),
    ("> authorization : acs LTAIok:{s}\n> host : kms", "> host : kms"),
    ("Authorization: Bearer {s}", "Authorization:"),
    ("token={jwt}", "token="),
    ("sts said {sts} then", " then"),
    ("key -----BEGIN RSA PRIVATE KEY-----\n{s}\n-----END RSA PRIVATE KEY----- end", " end"),
]


@pytest.mark.parametrize(("template", "kept"), PATTERN_CASES)
def test_credential_shapes_are_redacted_without_registration(template: str, kept: str) -> None:
    secret = "s3cr3t" + secrets.token_hex(6)
    sts = "CAIS" + secrets.token_hex(40)
    text = template.format(s=secret, jwt=JWT, sts=sts)
    result = scrub(text)
    for part in (secret, JWT, sts):
        assert part not in result, result
    assert REDACTED in result
    assert kept in result, f"over-redacted: {result}"


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_credential_shapes_in_an_exception_are_redacted(fmt: str) -> None:
    out = configure(fmt)
    try:
        raise ConnectionError(f"POST https://sts/?OIDCToken={JWT}&Signature=abc123def failed")
    except ConnectionError:
        log.exception("refresh failed")
    text = out.getvalue()
    assert JWT not in text
    assert "abc123def" not in text
    assert "ConnectionError" in text


# -- the SDK loggers that configure themselves -----------------------------------------------


@pytest.mark.parametrize("name", SELF_CONFIGURED_LOGGERS)
def test_sdk_logger_configured_before_setup_goes_through_our_redacting_handler(name: str) -> None:
    # What alibabacloud_credentials does at import time (Tea and darabonba alike).
    foreign = io.StringIO()
    sdk = logging.getLogger(name)
    sdk.setLevel(logging.INFO)
    sdk.addHandler(logging.StreamHandler(foreign))
    ours = configure("json", "debug")

    sdk.warning("POST https://sts.aliyuncs.com/?OIDCToken=%s", JWT)
    sdk.info("GET https://sts.aliyuncs.com/?OIDCToken=%s", JWT)  # below WARNING: dropped

    assert foreign.getvalue() == ""
    lines = ours.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["logger"] == name
    assert doc["message"] == f"POST https://sts.aliyuncs.com/?OIDCToken={REDACTED}"


def test_sdk_imported_after_setup_is_held_too() -> None:
    ours = configure("text", "debug")
    # The controller imports the SDK lazily: it adds its handler after our setup.
    foreign = io.StringIO()
    sdk = logging.getLogger("credentials")
    sdk.setLevel(logging.INFO)
    sdk.addHandler(logging.StreamHandler(foreign))

    sdk.info("refreshing with %s", JWT)
    sdk.warning("refresh failed for %s", JWT)

    assert foreign.getvalue() == ""
    assert sdk.handlers == []
    text = ours.getvalue()
    assert JWT not in text
    assert f"WARN  refresh failed for {REDACTED}" in text
    assert "refreshing" not in text


def test_kubernetes_body_dumps_stay_off_at_debug() -> None:
    out = configure("text", "debug")
    logging.getLogger("kubernetes.client.rest").debug("response body: {...}")
    logging.getLogger("controller.test").debug("our debug line")
    assert "response body" not in out.getvalue()
    assert "our debug line" in out.getvalue()


def test_uncaught_exception_in_a_thread_is_logged_redacted() -> None:
    out = configure("json")
    secret = marker()
    register_secret(secret)

    def crash() -> None:
        raise ValueError(f"leaked {secret}")

    thread = threading.Thread(target=crash, name="worker-7")
    thread.start()
    thread.join(5)
    doc = json.loads(out.getvalue())
    assert doc["message"] == "uncaught exception in thread worker-7"
    assert secret not in out.getvalue()
    assert "ValueError" in doc["exception"]


def test_uncaught_exception_in_the_main_thread_is_logged_redacted() -> None:
    out = configure("text")
    secret = marker()
    register_secret(secret)
    try:
        raise OSError(f"no {secret}")
    except OSError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    assert "FATAL uncaught exception" in out.getvalue()
    assert secret not in out.getvalue()


# -- setup -----------------------------------------------------------------------------------


def test_setup_is_idempotent_and_the_last_call_wins() -> None:
    first = configure("json")
    second = configure("text")
    root = logging.getLogger()
    assert len(root.handlers) == 1
    log.info("once")
    assert first.getvalue() == ""
    assert second.getvalue().count("once") == 1
    assert all(len(logging.getLogger(n).filters) == 1 for n in SELF_CONFIGURED_LOGGERS)


def test_setup_replaces_foreign_root_handlers() -> None:
    foreign = io.StringIO()
    logging.getLogger().addHandler(logging.StreamHandler(foreign))
    configure("text")
    log.warning("only ours")
    assert foreign.getvalue() == ""


@pytest.mark.parametrize(
    ("text", "level"),
    [("debug", logging.DEBUG), ("INFO", logging.INFO), ("warn", logging.WARNING),
     ("Warning", logging.WARNING), ("error", logging.ERROR), ("critical", logging.CRITICAL),
     (" info ", logging.INFO), ("15", 15)],
)
def test_parse_level(text: str, level: int) -> None:
    assert parse_level(text) == level


@pytest.mark.parametrize("text", ["", "verbose", "-1", "inf o"])
def test_parse_level_refuses_unknown_names(text: str) -> None:
    with pytest.raises(ValueError, match="log level"):
        parse_level(text)


def test_level_filters_lower_records() -> None:
    out = configure("text", "warning")
    log.info("quiet")
    log.warning("loud")
    assert "quiet" not in out.getvalue()
    assert "loud" in out.getvalue()


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        setup_logging("yaml", "info", stream=io.StringIO())


def test_mismatched_format_arguments_do_not_raise_or_print_the_arguments() -> None:
    out = configure("text")
    secret = marker()  # not registered: the arguments must be dropped, not just scrubbed
    log.info("two %s %s", secret)
    assert "log arguments did not match the format" in out.getvalue()
    assert secret not in out.getvalue()


# -- each redaction layer on its own ---------------------------------------------------------


def test_redacting_filter_scrubs_the_record_for_any_formatter() -> None:
    redactor = Redactor()
    secret = marker()
    redactor.register(secret)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s data=%(data)s"))
    handler.addFilter(RedactingFilter(redactor))
    plain = logging.getLogger("controller.test.plain")
    plain.addHandler(handler)
    plain.propagate = False
    try:
        try:
            raise RuntimeError(secret)
        except RuntimeError:
            plain.error("got %s", secret, exc_info=True, extra={"data": [secret]})
    finally:
        plain.removeHandler(handler)
        plain.propagate = True
    text = out.getvalue()
    assert secret not in text
    assert text.startswith(f"got {REDACTED} data=['{REDACTED}']\nTraceback")


def test_handler_scrubs_what_its_formatter_adds() -> None:
    out = io.StringIO()
    handler = setup_logging("text", "info", stream=out)
    handler.setFormatter(logging.Formatter("%(threadName)s: %(message)s"))
    thread = threading.Thread(target=lambda: log.info("hello"), name=f"token={JWT}")
    thread.start()
    thread.join(5)
    assert out.getvalue() == f"token={REDACTED}: hello\n"


# -- values with an owner (hold / release) ------------------------------------------------


def _credential(tag: str) -> str:
    return f"CAIS{tag}" + secrets.token_hex(24)


def test_a_held_value_is_redacted_until_its_owner_is_released() -> None:
    r = Redactor()
    token = _credential("a")
    r.hold("identity-1", token)
    assert token not in r.scrub(f"x={token}") and REDACTED in r.scrub(f"x={token}")
    assert base64.b64encode(token.encode()).decode() not in r.scrub(
        base64.b64encode(token.encode()).decode())
    assert r.release("identity-1") == 1
    assert r.scrub(f"x={token[4:]}") == f"x={token[4:]}"  # past the CAIS shape rule
    assert r.owned() == (0, 0) and len(r) == 0


def test_an_owner_holds_its_last_values_only() -> None:
    r = Redactor()
    first, second, third = (secrets.token_hex(20) for _ in range(3))
    for value in (first, second, third):
        r.hold("identity-1", value, keep=2)
    assert r.scrub(first) == first  # refreshed twice since: nothing holds it
    assert r.scrub(second) == REDACTED and r.scrub(third) == REDACTED
    r.hold("identity-1", third, keep=2)  # the same value handed out again: no rotation
    assert r.scrub(second) == REDACTED


def test_a_value_two_owners_hold_stays_until_both_are_released() -> None:
    r = Redactor()
    shared, own = secrets.token_hex(20), secrets.token_hex(20)
    r.hold("a", shared)
    r.hold("b", shared)
    r.hold("b", own)
    r.release("a")
    assert r.scrub(shared) == REDACTED
    r.release("b")
    assert r.scrub(shared) == shared and r.scrub(own) == own
    assert r.owned() == (0, 0)


def test_release_does_not_forget_a_value_registered_without_an_owner() -> None:
    r = Redactor()
    value = secrets.token_hex(20)
    r.register(value)
    r.hold("a", value)
    r.release("a")
    assert r.scrub(value) == REDACTED


def test_held_values_that_start_alike_keep_each_other_redacted() -> None:
    r = Redactor()
    prefix = secrets.token_hex(8)
    long_one, short_one = prefix + secrets.token_hex(10), prefix + "z9"
    r.hold("a", long_one)
    r.hold("b", short_one)
    r.release("a")  # the anchor (first characters) is shared: still needed for short_one
    assert r.scrub(f"[{short_one}]") == f"[{REDACTED}]"
    assert r.scrub(long_one) == long_one  # released: only the shared anchor stays
    r.release("b")
    assert r.owned() == (0, 0)
    assert r._shared == {} and r._owned.anchors == {}  # nothing left behind


def test_churn_of_owners_leaves_the_redactor_empty() -> None:
    """What the churn benchmark does to it: identities come, refresh and go."""
    r = Redactor(max_entries=100)
    for round_ in range(3):
        for i in range(200):
            owner = ("identity", round_, i)
            for _refresh in range(3):
                r.hold(owner, _credential(str(i)), keep=4)
        assert r.owned()[0] == 200
        for i in range(200):
            r.release(("identity", round_, i))
        assert r.owned() == (0, 0) and len(r) == 0


def test_a_short_held_value_goes_to_the_generations() -> None:
    r = Redactor()
    r.hold("a", "pin9")
    r.release("a")
    assert r.scrub_log("code pin9 here") == f"code {REDACTED} here"  # aged out, not released


_OWNERS = st.sampled_from(["a", "b", "c"])
_VALUES = st.sampled_from([f"value-{i:02d}-" + "x" * i for i in range(6)])


@given(st.lists(st.one_of(st.tuples(st.just("hold"), _OWNERS, _VALUES),
                          st.tuples(st.just("release"), _OWNERS, st.just(""))),
                max_size=40))
@settings(max_examples=200, deadline=None)
def test_hold_and_release_match_a_model(ops: list[tuple[str, str, str]]) -> None:
    """A value is redacted exactly when some owner holds it among its last two values."""
    r = Redactor()
    model: dict[str, list[str]] = {}
    for op, owner, value in ops:
        if op == "hold":
            r.hold(owner, value, keep=2)
            held = model.setdefault(owner, [])
            if value not in held:
                held.append(value)
                del held[:-2]
        else:
            r.release(owner)
            model.pop(owner, None)
    live = {v for held in model.values() for v in held}
    for i in range(6):
        value = f"value-{i:02d}-" + "x" * i
        assert (r.scrub(f"<{value}>") == f"<{REDACTED}>") == (value in live), (value, live)
    if not live:
        assert r.owned() == (0, 0) and r._shared == {} and r._owned.anchors == {}


def test_anchors_of_forgotten_values_are_rebuilt_away() -> None:
    """Forgetting a value leaves its anchor (another form may start the same way) until
    more anchors are stale than forms are live: then they are rebuilt from what is held."""
    r = Redactor()
    values = {i: secrets.token_hex(16) for i in range(3000)}
    for i, value in values.items():
        r.hold(i, value)
    for i in range(2990):
        r.release(i)
    assert r.owned() == (10, 20)  # each value and its base64 form
    assert len(r._owned.anchors) <= 20 + 1024  # rebuilt on the way, not 6,000
    for i in range(2990, 3000):
        assert r.scrub(f"<{values[i]}>") == f"<{REDACTED}>"
    assert r.scrub(values[0]) == values[0]
