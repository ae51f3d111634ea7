"""The ExternalSecret controller: its queue and workers (controller.py), the reconciler that
syncs one ExternalSecret into its Secret (reconciler.py), the values it reads (fetcher.py), what
it renders (render.py, templates.py), its status (status.py), the KMS polls (polls.py) and what
makes it sync at once (triggers.py)."""
