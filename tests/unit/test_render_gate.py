"""RenderGate: one render at a time per namespace, namespaces independent, nothing kept
once no one renders (a namespace per tenant must not leave a lock behind)."""

from __future__ import annotations

import threading

from controller.externalsecret.reconciler import RenderGate

DEADLINE = 5.0


def test_one_namespace_renders_one_at_a_time_others_go_on() -> None:
    gate = RenderGate()
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
    gate = RenderGate()
    try:
        with gate.hold("a"):
            raise RuntimeError("render failed")
    except RuntimeError:
        pass
    assert len(gate) == 0
    with gate.hold("a"):
        assert len(gate) == 1
