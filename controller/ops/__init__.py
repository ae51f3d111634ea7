"""Operating the controller: metrics, health probes and logs that are safe to ship.

Nothing here knows about ExternalSecrets, Kubernetes or Alibaba Cloud; the engine reports
to these modules through plain method calls. Only the standard library and
prometheus_client are imported, so the package can be used (and tested) on its own.

- `metrics`: the Prometheus metrics (`Metrics`) and the /metrics server (`MetricsServer`).
- `health`: /healthz and /readyz (`HealthServer`), loop liveness (`Heartbeat`), and
  `OpsServers`, which starts both endpoints as the flags ask (one server if they share
  an address).
- `redact`: the secret redactor every log line, Event and status text passes
  (`register_secret`, `hold_secret`, `scrub`).
- `logs`: text or JSON logging with every line redacted (`setup_logging`).
- `server`: the small HTTP server underneath (address parsing, thread lifecycle).
"""

from controller.ops.health import Check, HealthServer, Heartbeat, OpsServers
from controller.ops.logs import setup_logging
from controller.ops.metrics import SYNC_RESULTS, Metrics, MetricsServer
from controller.ops.redact import register_secret, scrub
from controller.ops.server import parse_address

__all__ = [
    "SYNC_RESULTS",
    "Check",
    "HealthServer",
    "Heartbeat",
    "Metrics",
    "MetricsServer",
    "OpsServers",
    "parse_address",
    "register_secret",
    "scrub",
    "setup_logging",
]
