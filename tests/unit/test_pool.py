"""`pool.ClientPool` and `pool.SdkClients`, the bookkeeping the KMS, OOS and KMS instance
readers share: build once, sweep idle clients (telling `on_drop` and `on_sweep`), drop on
demand, refuse calls once cancelled. The readers' own sweeps are in test_pruning.py."""

from __future__ import annotations

import pytest

from controller.providers import FetchError, Kind
from controller.providers.alibaba.identity import ACCESS_KEY, Identity, IdentityPool
from controller.providers.alibaba.pool import ClientPool, SdkClients
from tests.unit.test_pruning import Clock


def test_a_client_is_built_once_and_the_sweep_tells_its_owner() -> None:
    clock = Clock(0.0)
    dropped: list[str] = []
    cutoffs: list[float] = []
    pool: ClientPool[str, str] = ClientPool(5.0, idle=100.0, clock=clock,
                                            on_drop=dropped.append, on_sweep=cutoffs.append)
    builds: list[str] = []

    def build(name: str) -> str:
        builds.append(name)
        return f"client-{name}"

    assert pool.client("a", lambda: build("a")) == "client-a"
    assert pool.client("a", lambda: build("again")) == "client-a"
    pool.client("old", lambda: build("old"))
    for now in range(10, 200, 10):
        clock.now = float(now)
        pool.client("a", lambda: build("again"))
    assert builds == ["a", "old"] and dropped == ["client-old"]
    # A sweep at most every 25 s (a quarter of idle), at the next access: 30 s, 60 s, ...
    assert cutoffs == [now - 100.0 for now in (30.0, 60.0, 90.0, 120.0, 150.0, 180.0)]
    assert pool.sizes() == {"clients": 1, "limiters": 0}


def test_drop_close_and_cancel() -> None:
    dropped: list[int] = []
    pool: ClientPool[int, int] = ClientPool(5.0, on_drop=dropped.append, label="pools")
    for n in range(4):
        pool.client(n, lambda n=n: n * 10)
    assert pool.limiter("h") is pool.limiter("h")
    assert pool.drop(lambda key, _client: key % 2 == 0) == 2 and dropped == [0, 20]
    pool.close()
    assert dropped == [0, 20, 10, 30]
    assert pool.sizes() == {"pools": 0, "limiters": 1}
    pool.check_cancelled()
    pool.cancel()
    with pytest.raises(FetchError) as caught:
        pool.check_cancelled()
    assert caught.value.kind == Kind.TRANSIENT and caught.value.code == "Cancelled"


def test_sdk_clients_forget_an_identity_or_an_expired_credential() -> None:
    identities = IdentityPool(on_secret=None)
    one = Identity(ACCESS_KEY, access_key_id="LTAI0001", access_key_secret="s1")
    two = Identity(ACCESS_KEY, access_key_id="LTAI0002", access_key_secret="s2")
    clients = SdkClients(identities, 5.0)
    credential = identities.credential(one)
    clients.entry(one, "kms-a", lambda: ("sdk-a", credential))
    clients.entry(one, "kms-b", lambda: ("sdk-b", credential))
    clients.entry(two, "kms-a", lambda: ("sdk-c", identities.credential(two)))
    clients.forget_credential(one, credential)
    assert clients.sizes()["clients"] == 1 and len(identities) == 1
    assert clients.forget_identity(two) == 1 and len(identities) == 0


def test_reads_are_made_on_behalf_of_a_namespace_per_thread() -> None:
    """The sync and the poll say whose read it is; a source shares its rate by it."""
    import threading

    from controller.providers import on_behalf_of, tenant

    seen: list[str] = []
    assert tenant() == ""
    with on_behalf_of("team-a"):
        other = threading.Thread(target=lambda: seen.append(tenant()))
        other.start()
        other.join(5)
        with on_behalf_of("team-b"):
            assert tenant() == "team-b"
        assert tenant() == "team-a"
    assert tenant() == "" and seen == [""]  # another thread reads for nobody in particular
