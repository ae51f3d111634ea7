"""`python -m controller` runs the same command as `ack-secret-manager`."""

from controller.cli import entrypoint

entrypoint()
