"""The runtime both controllers run on, knowing no resource and no source: the worker loop
that owns retries and backoff and the `Result` a reconcile returns (controller.py), the work
queue (queue.py), the clock, real and fake (clock.py), and a gate per key (gates.py)."""
