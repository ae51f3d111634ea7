"""The runtime both controllers run on, knowing no resource and no source: the worker loop
that owns retries and backoff and the `Result` a reconcile returns (controller.py), the work
queue (queue.py) and the clock, real and fake (clock.py). (A gate per key, which the
providers' rate limiter uses too, is controller/gates.py.)"""
