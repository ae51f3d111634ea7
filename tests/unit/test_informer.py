"""The informer's cache only moves forward: writes' results never replace a newer watched
version, a DELETED during a write wins, watch events never move an object backwards, and
deletions (watched or found by a relist) reach the delete listeners."""

from __future__ import annotations

from typing import Any

import pytest

from controller.kube.informer import Informer, newer
from controller.kube.rest import SECRETS


def secret(name: str, rv: str, value: str = "v") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv},
            "data": {"k": value}}


class Lister:
    """A fake Rest answering the informer's list with `items`."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.rv = "1"

    def get(self, _path: str, **_query: Any) -> dict[str, Any]:
        return {"items": [dict(i) for i in self.items], "metadata": {"resourceVersion": self.rv}}


def informer(rest: Any = None) -> tuple[Informer, list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []
    inf = Informer(rest or Lister(), SECRETS,  # type: ignore[arg-type]
                   lambda kind, obj: seen.append((kind, obj["metadata"]["name"])),
                   namespace="ns")
    return inf, seen


def deliver(inf: Informer, kind: str, obj: dict[str, Any]) -> None:
    """The informer's watch path, as if the event had arrived on the stream."""
    inf._apply({"type": kind, "object": obj}, "0")


def cached_rv(inf: Informer, name: str = "s") -> str | None:
    obj = inf.get("ns", name)
    return None if obj is None else str(obj["metadata"]["resourceVersion"])


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("11", "9", True), ("9", "11", False), ("10", "10", False),
    ("abc", "9", False), ("11", "", False)])
def test_newer_compares_integer_resource_versions_else_keeps_the_cached(
        a: str, b: str, expected: bool) -> None:
    assert newer(secret("s", a), secret("s", b)) is expected


def test_a_write_result_older_than_the_watched_version_does_not_replace_it() -> None:
    inf, _ = informer()
    deliver(inf, "ADDED", secret("s", "10"))
    ticket = inf.begin_write("ns", "s")
    deliver(inf, "MODIFIED", secret("s", "12", "user-edit"))  # lands while our write runs
    assert not inf.finish_write(ticket, secret("s", "11", "ours"))
    assert cached_rv(inf) == "12"


def test_a_newer_write_result_replaces_the_cached_version() -> None:
    inf, _ = informer()
    deliver(inf, "ADDED", secret("s", "10"))
    ticket = inf.begin_write("ns", "s")
    assert inf.finish_write(ticket, secret("s", "11", "ours"))
    assert cached_rv(inf) == "11"
    deliver(inf, "MODIFIED", secret("s", "10"))  # a late event of the older version
    assert cached_rv(inf) == "11"
    deliver(inf, "MODIFIED", secret("s", "11"))
    assert cached_rv(inf) == "11"


def test_a_deleted_delivered_during_a_write_wins() -> None:
    inf, seen = informer()
    deliver(inf, "ADDED", secret("s", "10"))
    ticket = inf.begin_write("ns", "s")
    deliver(inf, "DELETED", secret("s", "12"))
    assert not inf.finish_write(ticket, secret("s", "11"))
    assert inf.get("ns", "s") is None
    assert seen[-1] == ("DELETED", "s")


def test_a_deleted_before_the_write_began_does_not_stop_a_recreation_from_caching() -> None:
    inf, _ = informer()
    deliver(inf, "ADDED", secret("s", "10"))
    deliver(inf, "DELETED", secret("s", "11"))
    ticket = inf.begin_write("ns", "s")
    assert inf.finish_write(ticket, secret("s", "12"))
    assert cached_rv(inf) == "12"


def written(inf: Any, obj: dict[str, Any]) -> bool:
    """One write of ours, with nothing deleted meanwhile: its result as the cache takes it."""
    meta = obj["metadata"]
    return bool(inf.finish_write(inf.begin_write(meta["namespace"], meta["name"]), obj))


def test_non_integer_versions_prefer_the_watch() -> None:
    inf, _ = informer()
    deliver(inf, "ADDED", secret("s", "opaque-a"))
    assert not written(inf, secret("s", "opaque-b"))
    assert cached_rv(inf) == "opaque-a"


def test_a_failed_write_releases_its_ticket() -> None:
    inf, _ = informer()
    ticket = inf.begin_write("ns", "s")
    assert not inf.finish_write(ticket, None)
    assert inf._writing == {}


def test_tickets_of_concurrent_writes_are_all_released() -> None:
    inf, _ = informer()
    t1, t2 = inf.begin_write("ns", "s"), inf.begin_write("ns", "s")
    deliver(inf, "DELETED", secret("s", "3"))
    assert not inf.finish_write(t2, secret("s", "2"))
    assert not inf.finish_write(t1, secret("s", "1"))
    assert inf._writing == {}


def test_delete_listeners_hear_watched_and_relisted_deletions() -> None:
    rest = Lister()
    rest.items = [secret("a", "1"), secret("b", "1")]
    inf, _ = informer(rest)
    heard: list[tuple[str, str]] = []
    inf.on_deleted(heard.append)
    inf.on_deleted(heard.append)  # subscribing twice is one subscription
    inf._relist()
    deliver(inf, "DELETED", secret("a", "2"))
    assert heard == [("ns", "a")]
    ticket = inf.begin_write("ns", "b")
    rest.items = []  # b vanished while the watch was down
    inf._relist()
    assert heard == [("ns", "a"), ("ns", "b")]
    assert not inf.finish_write(ticket, secret("b", "5"))
    assert inf.get("ns", "b") is None


def test_a_relist_keeps_a_written_version_newer_than_its_snapshot() -> None:
    rest = Lister()
    rest.items = [secret("s", "10")]
    inf, _ = informer(rest)
    inf._relist()
    assert written(inf, secret("s", "12", "ours"))
    inf._relist()  # the list's snapshot predates our write
    assert cached_rv(inf) == "12"
    rest.items = [secret("s", "15", "later")]
    inf._relist()
    assert cached_rv(inf) == "15"
