"""KeyedGates (controller/gates.py). As the reconciler's render gate (a lock per namespace): one
render at a time per namespace, namespaces independent, nothing kept once no one renders (a
namespace per tenant must not leave a lock behind). With semaphores, as a per-caller limit whose
place can be given back before the block ends: at most N users of a key in, counted users keep
the gate, the last one drops it."""

from __future__ import annotations

import threading

from controller.gates import KeyedGates

DEADLINE = 5.0


def test_one_namespace_renders_one_at_a_time_others_go_on() -> None:
    gate: KeyedGates[threading.Lock] = KeyedGates(threading.Lock)
    inside = threading.Event()
    leave = threading.Event()
    second_in = threading.Event()

    def first() -> None:
        with gate.hold("a"):
            inside.set()
            assert leave.wait(DEADLINE)

    def second() -> None:
        with gate.hold("a"):
            second_in.set()

    t1 = threading.Thread(target=first, daemon=True)
    t1.start()
    assert inside.wait(DEADLINE)
    t2 = threading.Thread(target=second, daemon=True)
    t2.start()
    with gate.hold("b"):  # another namespace is not held back
        pass
    assert not second_in.is_set()
    leave.set()
    assert second_in.wait(DEADLINE)
    t1.join(DEADLINE)
    t2.join(DEADLINE)
    assert len(gate) == 0


def test_a_failing_render_releases_its_namespace() -> None:
    gate: KeyedGates[threading.Lock] = KeyedGates(threading.Lock)
    try:
        with gate.hold("a"):
            raise RuntimeError("render failed")
    except RuntimeError:
        pass
    assert len(gate) == 0
    with gate.hold("a"):
        assert len(gate) == 1


def test_a_semaphore_per_key_admits_n_and_can_be_given_back_early() -> None:
    """The shape of a per-caller limit (RateLimiter.turn's): `entry` hands over the caller's
    semaphore untaken; a place given back before the block ends lets the next one in while
    the first is still inside; the key's gate lives until its last user leaves."""
    gates: KeyedGates[threading.Semaphore] = KeyedGates(lambda: threading.Semaphore(2))
    inside = threading.Semaphore(0)
    leave = threading.Event()
    third_in = threading.Event()

    def user(give_back_early: bool) -> None:
        with gates.entry("tenant") as gate:
            assert gate.acquire(timeout=DEADLINE)
            inside.release()
            if give_back_early:
                gate.release()
            assert leave.wait(DEADLINE)
            if not give_back_early:
                gate.release()

    def third() -> None:
        with gates.entry("tenant") as gate:
            assert gate.acquire(timeout=DEADLINE)
            third_in.set()
            gate.release()

    users = [threading.Thread(target=user, args=(False,), daemon=True) for _ in range(2)]
    for t in users:
        t.start()
    for _ in users:
        assert inside.acquire(timeout=DEADLINE)
    waiting = threading.Thread(target=third, daemon=True)
    waiting.start()
    with gates.entry("other") as other:  # another key has its own places
        assert other.acquire(blocking=False)
        other.release()
    assert not third_in.is_set()  # both places taken: the third waits
    early = threading.Thread(target=user, args=(True,), daemon=True)
    leave.set()
    assert third_in.wait(DEADLINE)
    for t in [*users, waiting]:
        t.join(DEADLINE)
    leave.clear()
    early.start()  # takes a place and gives it back at once, still inside its block
    assert inside.acquire(timeout=DEADLINE)
    with gates.entry("tenant") as gate:  # both places free although `early` is inside
        assert gate.acquire(blocking=False) and gate.acquire(blocking=False)
        gate.release()
        gate.release()
        assert len(gates) == 1
    leave.set()
    early.join(DEADLINE)
    assert len(gates) == 0
