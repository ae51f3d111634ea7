"""The worker loop the controllers run: a queue of one key type, worker threads, and the retry
bookkeeping, driven by a reconcile function that returns a `Result`.

In controller-runtime's words: a Reconciler is the logic (here a function from a key to a
`Result`); a `Controller` is a queue and its workers, and owns requeues, backoff and retries;
a Manager runs controllers (app.py; externalsecret/controller.py's `ExternalSecrets` holds
the ExternalSecret syncs' and polls' controllers and their handlers). ExternalSecret
syncs and KMS polls run on one each (so a change a user makes never waits behind background
polls), as do the SecretStore status checks and the ClusterExternalSecret passes.

What the loop does with a key once its reconcile returns (controller-runtime's
reconcileHandler):

- `Result()`, done: the key's failures are forgotten; nothing is scheduled (its next run
  comes from an event, a poll or a handler);
- `Result.after(s)`: forgotten too, and the key comes back in `s` seconds;
- `Result.retry(cap)`: the key comes back after its backoff (`ExponentialBackoff.when`,
  per key, jittered), at most `cap` seconds when given;
- an exception: logged with its traceback (or handed to `on_error`), and the key comes back
  after its backoff (the backoff's own cap only).

A controller made with `retry_as` retries a failed key as `retry_as(key)` instead (a
ClusterExternalSecret's namespace pass that fails is retried as a full pass), with that
key's backoff; success still forgets the key that ran.

The queue's guarantees (a key in one worker at a time; adds of a key in flight become one
re-run after it; delayed adds; round-robin between groups with a per-group worker limit) are
runtime/queue.py's. Stop: `shutdown()` stops the queue taking adds and drops the delayed
ones; a worker that gets a key after that hands it back unprocessed (the next leader syncs
it), and reconciles in flight run to their end. `join(deadline)` waits for the workers until
a monotonic deadline and names those still running.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from controller.runtime.clock import Clock, RealClock
from controller.runtime.queue import ExponentialBackoff, WorkQueue

__all__ = ["Controller", "Result"]

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Result:
    """What a reconcile asks of its loop: come back after `requeue_after` seconds (None: not
    at all), or, when `failed`, come back after the key's backoff, at most `retry_cap`
    seconds (None: the backoff's own cap). Build one with `Result()`, `Result.after(s)` or
    `Result.retry(cap)`."""

    requeue_after: float | None = None
    failed: bool = False
    retry_cap: float | None = None

    @classmethod
    def after(cls, seconds: float) -> Result:
        """Done; come back in `seconds`."""
        return cls(requeue_after=seconds)

    @classmethod
    def retry(cls, cap: float | None = None) -> Result:
        """Failed; come back after the key's backoff, at most `cap` seconds."""
        return cls(failed=True, retry_cap=cap)


class Controller(Generic[K]):
    """A work queue of `K` keys, the threads that work on it, and their retries (see the
    module docstring). `reconcile(key)` is called by one worker at a time per key.

    An unexpected failure is logged with its traceback as "<describe(key)> failed
    unexpectedly", or handed to `on_error(key, exc)` instead when given (which says it its
    own way); either way the key is retried. `group` and `group_limit` make the queue fair
    between groups of keys (runtime/queue.py); `on_wait` is the queue's wait metric.
    """

    def __init__(
        self,
        reconcile: Callable[[K], Result],
        *,
        backoff: ExponentialBackoff,
        clock: Clock | None = None,
        describe: Callable[[K], str] = str,
        on_error: Callable[[K, Exception], None] | None = None,
        retry_as: Callable[[K], K] | None = None,
        group: Callable[[K], Hashable] | None = None,
        group_limit: int | None = None,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        self.reconcile = reconcile
        self.queue: WorkQueue[K] = WorkQueue(clock=clock or RealClock(), on_wait=on_wait,
                                             group=group, group_limit=group_limit)
        self.stopping = threading.Event()
        self._backoff = backoff
        self._describe = describe
        self._on_error = on_error
        self._retry_as = retry_as or (lambda key: key)
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------ lifecycle
    def start(self, *names: str) -> list[threading.Thread]:
        """Start a worker thread by each of `names`; returns them."""
        started = [threading.Thread(target=self._work, name=name, daemon=True)
                   for name in names]
        for thread in started:
            thread.start()
        self._threads += started
        return started

    def shutdown(self) -> None:
        """No new work from now on; reconciles in flight run to their end."""
        self.stopping.set()
        self.queue.shutdown()

    def join(self, deadline: float) -> list[str]:
        """Wait for the workers until `deadline` (time.monotonic seconds); the names of the
        threads still running then (empty when every worker exited)."""
        self.shutdown()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in self._threads if t.is_alive()]

    def forget(self, key: K) -> None:
        """Drop `key`'s failures (it was deleted: its next run starts a fresh backoff)."""
        self._backoff.forget(key)

    # --------------------------------------------------------------- worker
    def _work(self) -> None:
        """One worker: take a key, reconcile it, until the queue shuts down."""
        while True:
            key = self.queue.get()
            if key is None:
                return
            if self.stopping.is_set():
                self.queue.done(key)  # stopping: no new work, the next leader does it
                return
            try:
                self.process(key)
            finally:
                self.queue.done(key)

    def process(self, key: K) -> None:
        """Reconcile `key` (handed out by the queue) and act on its `Result`."""
        try:
            result = self.reconcile(key)
        except Exception as exc:
            if self._on_error is not None:
                self._on_error(key, exc)
            else:
                log.exception("%s failed unexpectedly", self._describe(key))
            result = Result.retry()
        self.settle(key, result)

    def settle(self, key: K, result: Result) -> None:
        """Act on `key`'s `result`: forget its failures or count one, and queue it again
        when the result asks (the loop's part of `process`)."""
        if result.failed:
            again = self._retry_as(key)
            delay = self._backoff.when(again)
            if result.retry_cap is not None:
                delay = min(delay, result.retry_cap)
            self.queue.add_after(again, delay)
            return
        self._backoff.forget(key)
        if result.requeue_after is not None:
            self.queue.add_after(key, result.requeue_after)
