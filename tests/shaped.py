"""The API's parsers with the installed sources' shape (controller/providers/installed.py), as
the controller runs them: for tests that parse ExternalSecrets and stores."""

from __future__ import annotations

from collections.abc import Mapping

from controller import api
from controller.providers import installed

SHAPE = installed.shape()


def parse_external_secret(obj: Mapping[str, object],
                          bounds: api.IntervalBounds = api.DEFAULT_BOUNDS) -> api.ExternalSecret:
    return api.parse_external_secret(obj, bounds, shape=SHAPE)


def parse_store(obj: Mapping[str, object]) -> api.SecretStore:
    return api.parse_store(obj, SHAPE)


def parse_secret_store(obj: Mapping[str, object]) -> api.SecretStore:
    return api.parse_secret_store(obj, SHAPE)


def parse_cluster_secret_store(obj: Mapping[str, object]) -> api.ClusterSecretStore:
    return api.parse_cluster_secret_store(obj, SHAPE)
