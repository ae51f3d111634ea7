"""The engine: work queue, clock, scheduler, reconciler and fetcher."""
