"""The runtime both controllers run on, knowing no resource and no source: the work queue and
the clock (real and fake)."""
