"""Generate the CRDs in helm/ack-secret-manager/crds/ from one Python description.

The kinds share their building blocks (a data entry, a secret reference, the KMS
provider), so they are described once here; `make crds` writes the YAML, and a test fails when
the committed files differ from what this script produces.
Run: python hack/gen_crds.py [--check]
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import yaml

GROUP = "alibabacloud.com"
OUT = pathlib.Path(__file__).resolve().parents[1] / "helm/ack-secret-manager/crds"
KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
DURATION_PATTERN = r"^(0|([0-9]+(\.[0-9]+)?(ms|s|m|h))+)$"
# A KMS endpoint: [http[s]://]host[:port][/], nothing else (no user@, path, query, fragment).
# controller/engine/stores.py parses with the same pattern (a unit test keeps them equal).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
ENDPOINT_PATTERN = (r"^(?:https?://)?(?:" + _LABEL + r"(?:\." + _LABEL + r")*"
                    r"|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?/?$")

S: dict[str, Any] = {"type": "string"}
# Bounds (controller/model.py enforces the same for objects stored before the schema did).
MAX_TEXT = 4096
MAX_HOST = 255


def obj(props: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    out.update(extra)
    return out


def arr(items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **extra}


def s(desc: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": desc, **extra}


SECRET_REF = obj(
    {
        "name": s("Secret name", minLength=1),
        "namespace": s("Secret namespace (default: the referring object's namespace)"),
        "key": s("key in the Secret's data", minLength=1),
    },
    ["name", "key"],
)

STORE_REF = obj(
    {
        "name": s("SecretStore or ClusterSecretStore name", minLength=1),
        "namespace": s("SecretStore namespace (default: the ExternalSecret's namespace)"),
        "kind": s("SecretStore (default) or ClusterSecretStore",
                  enum=["SecretStore", "ClusterSecretStore"]),
    },
    ["name"],
)

TEMPLATE_REF = obj(
    {
        "name": s("ConfigMap or Secret in the ExternalSecret's namespace", minLength=1,
                  maxLength=253),
        "items": arr(obj({"key": s("key holding a template", minLength=1, maxLength=253,
                                   pattern=KEY_PATTERN),
                          "templateAs": s("Values (default) or KeysAndValues",
                                          enum=["Values", "KeysAndValues"])}, ["key"]),
                     maxItems=64),
    },
    ["name", "items"],
)

TEMPLATE_FROM = obj(
    {
        "configMap": TEMPLATE_REF,
        "secret": TEMPLATE_REF,
        "literal": s("a template rendered under the key 'literal'", maxLength=MAX_TEXT * 16),
        "target": s("Data (default), Labels or Annotations",
                    enum=["Data", "Labels", "Annotations"]),
    }
)

DATA_ENTRY = obj(
    {
        "key": s("name of the secret in KMS Secrets Manager", minLength=1, maxLength=MAX_TEXT),
        "name": s("key in the Kubernetes Secret (default: key)", pattern=KEY_PATTERN,
                  maxLength=253),
        "versionStage": s("KMS version stage, e.g. ACSCurrent (default), ACSPrevious",
                          maxLength=MAX_TEXT),
        "versionId": s("KMS version id", maxLength=MAX_TEXT),
        "kmsEndpoint": s("KMS endpoint for this entry, e.g. "
                          "<instanceId>.cryptoservice.kms.aliyuncs.com (https on "
                          "*.aliyuncs.com unless the operator allows others)", maxLength=MAX_HOST,
                          pattern=ENDPOINT_PATTERN),
        "secretStoreRef": STORE_REF,
        "jmesPath": arr(
            obj(
                {
                    "path": s("JMESPath expression into the JSON value", minLength=1,
                              maxLength=MAX_TEXT),
                    "objectAlias": s("key in the Kubernetes Secret", pattern=KEY_PATTERN,
                                     maxLength=253),
                },
                ["path", "objectAlias"],
            ),
            maxItems=100,
        ),
    },
    ["key"],
)

ES_SPEC = obj(
    {
        "provider": s("kms (default) or oos", enum=["", "kms", "oos"]),
        "type": s("type of the Kubernetes Secret (default Opaque)"),
        "refreshInterval": s("how often to re-read KMS (Go duration, 0 = never); "
                             "default: the controller's --polling-interval; kept within the "
                             "controller's --min-refresh-interval and --max-refresh-interval",
                             pattern=DURATION_PATTERN, maxLength=64),
        "rotationInterval": s("ack-secret-manager v0.6 name of refreshInterval",
                              pattern=DURATION_PATTERN, maxLength=64),
        "data": arr(DATA_ENTRY, maxItems=100),
        "dataProcess": arr(
            obj(
                {
                    "extract": DATA_ENTRY,
                    "replaceRule": arr(
                        obj(
                            {"source": s("regular expression on key names", minLength=1,
                                         maxLength=MAX_TEXT),
                             "target": s("replacement", maxLength=MAX_TEXT)},
                            ["source"],
                        ),
                        maxItems=50,
                    ),
                },
                ["extract"],
            ),
            maxItems=20,
        ),
        "target": obj(
            {
                "name": s("name of the Kubernetes Secret (default: the ExternalSecret's name)",
                          pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", maxLength=253),
                "creationPolicy": s("Owner (default): create and own the Secret; Merge: add keys "
                                    "to an existing Secret; Orphan: create, never own",
                                    enum=["Owner", "Merge", "Orphan"]),
                "deletionPolicy": s("Delete (default): the owned Secret goes with the "
                                    "ExternalSecret; Retain: it stays",
                                    enum=["Delete", "Retain"]),
                "template": obj(
                    {
                        "type": s("type of the Kubernetes Secret"),
                        "metadata": obj(
                            {
                                "labels": {"type": "object", "maxProperties": 64,
                                           "additionalProperties": S},
                                "annotations": {"type": "object", "maxProperties": 64,
                                                "additionalProperties": S},
                            }
                        ),
                        "data": {"type": "object", "maxProperties": 64,
                                 "description": "Secret key -> Go template over the fetched "
                                 "values (docs/templates.md)",
                                 "additionalProperties": s("Go template",
                                                           maxLength=MAX_TEXT * 16)},
                        "mergePolicy": s("Replace (default): the Secret holds only the "
                                         "templates' output; Merge: the fetched keys too",
                                         enum=["Replace", "Merge"]),
                        "engineVersion": s("v2 (the only engine)", enum=["v2"]),
                        "templateFrom": arr(TEMPLATE_FROM, maxItems=16),
                    },
                    **{"x-kubernetes-preserve-unknown-fields": True},
                ),
            }
        ),
    },
    **{
        "x-kubernetes-validations": [
            {
                "rule": "(has(self.data) && size(self.data) > 0) || "
                "(has(self.dataProcess) && size(self.dataProcess) > 0)",
                "message": "set at least one entry in spec.data or spec.dataProcess",
            }
        ]
    },
)

CONDITION = obj(
    {
        "type": S,
        "status": s("True, False or Unknown"),
        "reason": S,
        "message": S,
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": {"type": "integer", "format": "int64"},
    },
    ["type", "status"],
)

ES_STATUS = obj(
    {
        "conditions": arr(CONDITION, **{"x-kubernetes-list-type": "map",
                                        "x-kubernetes-list-map-keys": ["type"]}),
        "observedGeneration": {"type": "integer", "format": "int64"},
        "refreshTime": {"type": "string", "format": "date-time",
                        "description": "last time the Secret's content was written or confirmed "
                        "after a change"},
        "lastSyncTime": {"type": "string", "format": "date-time",
                         "description": "last sync that ended Ready (written or confirmed "
                         "unchanged); refreshed at least once per interval when syncs happen"},
        "secretName": S,
        "dataSyncResults": arr(
            obj(
                {
                    "entry": s("data[i] or dataProcess[i].extract"),
                    "KMSSecretKey": s("name of the KMS secret (or OOS parameter) this "
                                      "entry reads; ack-secret-manager v0.6's key"),
                    "ExternalSecretKey": s("the same name under the key newer "
                                           "ack-secret-manager releases write"),
                    "versionId": s("KMS version synced"),
                    "status": s("Synced or Failed"),
                    "reason": S,
                    "synchronizationTime": {"type": "string", "format": "date-time"},
                }
            )
        ),
    }
)

AUTH = obj(
    {
        "accessKey": SECRET_REF,
        "accessKeySecret": SECRET_REF,
        "ramRoleARN": S,
        "ramRoleSessionName": S,
        "oidcProviderARN": S,
        "oidcTokenFilePath": S,
        "roleSessionExpiration": S,
        "remoteRamRoleARN": S,
        "remoteRamRoleSessionName": S,
        "serviceAccountRef": obj(
            {"name": s("ServiceAccount name", minLength=1),
             "namespace": S,
             "audiences": arr(S)},
            ["name"],
        ),
    }
)

STORE_SPEC_PROPS: dict[str, Any] = {
    "KMS": obj(
        {
            "KMSAuth": AUTH,
            "dedicatedKMSAuth": obj(
                {"protocol": S, "ca": S, "ignoreSSL": {"type": "boolean"},
                 "endpoint": s("the KMS instance's endpoint, https", maxLength=MAX_HOST,
                               pattern=ENDPOINT_PATTERN),
                 "clientKeyContent": SECRET_REF, "password": SECRET_REF}
            ),
            "endpoint": s("KMS endpoint (shared gateway or "
                          "<instanceId>.cryptoservice.kms.aliyuncs.com)", maxLength=MAX_HOST,
                          pattern=ENDPOINT_PATTERN),
            "ca": s("PEM CA bundle of a KMS instance endpoint"),
            "caSecretRef": SECRET_REF,
        }
    ),
    "OOS": obj({"OOSAuth": AUTH}),
}

ONE_PROVIDER = {
    "x-kubernetes-validations": [
        {"rule": "has(self.KMS) != has(self.OOS)",
         "message": "set exactly one provider: spec.KMS or spec.OOS"}
    ]
}

STORE_STATUS = obj(
    {"conditions": arr(CONDITION, **{"x-kubernetes-list-type": "map",
                                     "x-kubernetes-list-map-keys": ["type"]})}
)

CLUSTER_CONDITIONS = arr(
    obj(
        {
            "namespaces": arr(S),
            "namespaceRegexes": arr(S),
            "namespaceSelector": obj(
                {
                    "matchLabels": {"type": "object", "additionalProperties": S},
                    "matchExpressions": arr(
                        obj(
                            {"key": S,
                             "operator": s("In, NotIn, Exists or DoesNotExist",
                                           enum=["In", "NotIn", "Exists", "DoesNotExist"]),
                             "values": arr(S)},
                            ["key", "operator"],
                        )
                    ),
                }
            ),
        }
    ),
    description="namespaces that may use this store (none: all namespaces)",
)

PRINTER = [
    {"name": "Ready", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Reason", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
]


AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

# ClusterExternalSecret (ack-secret-manager v0.6 field names; External Secrets Operator's
# older namespaceSelector and refreshTime are accepted too). See docs/usage.md.
LABEL_SELECTOR = obj(
    {
        "matchLabels": {"type": "object", "maxProperties": 64, "additionalProperties": S},
        "matchExpressions": arr(
            obj(
                {"key": S,
                 "operator": s("In, NotIn, Exists or DoesNotExist",
                               enum=["In", "NotIn", "Exists", "DoesNotExist"]),
                 "values": arr(S)},
                ["key", "operator"],
            ),
            maxItems=50,
        ),
    },
    description="a label selector over namespace labels ({} selects every namespace)",
)
DNS_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
CES_SPEC = obj(
    {
        "externalSecretSpec": {**ES_SPEC, "description": "the spec of the ExternalSecret created "
                               "in each selected namespace (every ExternalSecret field)"},
        "externalSecretName": s("name of the ExternalSecrets (default: the "
                                "ClusterExternalSecret's name)", minLength=1, maxLength=253,
                                pattern=DNS_NAME),
        "externalSecretMetadata": obj(
            {"labels": {"type": "object", "maxProperties": 64, "additionalProperties": S},
             "annotations": {"type": "object", "maxProperties": 64,
                             "additionalProperties": S}},
            description="labels and annotations of the ExternalSecrets",
        ),
        "conditions": arr(
            obj(
                {
                    "namespaceSelector": LABEL_SELECTOR,
                    "namespaces": arr(s("a namespace name", minLength=1, maxLength=63),
                                      maxItems=1000),
                    "namespaceRegexes": arr(s("a regular expression (RE2) on namespace names",
                                              maxLength=MAX_TEXT), maxItems=50),
                },
                description="a namespace is chosen when any of its criteria matches",
            ),
            maxItems=50,
            description="namespaces to create the ExternalSecret in (conditions ORed); none of "
            "conditions, namespaceSelectors, namespaceSelector: every namespace",
        ),
        "namespaceSelectors": arr(LABEL_SELECTOR, maxItems=50,
                                  description="label selectors, ORed (ack-secret-manager, "
                                  "deprecated there in favour of conditions)"),
        "namespaceSelector": {**LABEL_SELECTOR, "description": "one label selector (External "
                              "Secrets Operator's spelling)"},
        "rotationInterval": s("how often every namespace is checked again besides watch "
                              "events (Go duration; default: on change only)",
                              pattern=DURATION_PATTERN, maxLength=64),
        "refreshTime": s("External Secrets Operator's name of rotationInterval",
                         pattern=DURATION_PATTERN, maxLength=64),
    },
    ["externalSecretSpec"],
)
CES_STATUS = obj(
    {
        "externalSecretName": s("name of the ExternalSecrets created"),
        "observedGeneration": {"type": "integer", "format": "int64"},
        "provisionedNamespaces": arr(S, description="namespaces holding its ExternalSecret"),
        "failedNamespaces": arr(
            obj({"namespace": S, "reason": S}, ["namespace"]),
            description="namespaces where its ExternalSecret could not be written, and why "
            "(first 100)",
        ),
        "conditions": arr(CONDITION, **{"x-kubernetes-list-type": "map",
                                        "x-kubernetes-list-map-keys": ["type"]}),
    }
)


# Short names that External Secrets Operator's CRDs do not use (es, ss, css, ces are theirs:
# with both installed, `kubectl get es` would list one project's objects silently), and one
# category: `kubectl get ack-secret-manager -A` lists all four kinds.
CATEGORY = "ack-secret-manager"


def crd(kind: str, plural: str, scope: str, spec: dict[str, Any], status: dict[str, Any],
        columns: list[dict[str, Any]], short: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": kind.lower(), "shortNames": short,
                      "categories": [CATEGORY]},
            "scope": scope,
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [*columns, AGE],
                    "schema": {
                        "openAPIV3Schema": obj(
                            {"apiVersion": S, "kind": S, "metadata": {"type": "object"},
                             "spec": spec, "status": status},
                            ["spec"],
                        )
                    },
                }
            ],
        },
    }


def documents() -> dict[str, dict[str, Any]]:
    cluster_spec = obj({**STORE_SPEC_PROPS, "conditions": CLUSTER_CONDITIONS}, **ONE_PROVIDER)
    return {
        "externalsecrets.yaml": crd(
            "ExternalSecret", "externalsecrets", "Namespaced", ES_SPEC, ES_STATUS,
            [{"name": "Store", "type": "string",
              "jsonPath": ".spec.data[0].secretStoreRef.name"},
             {"name": "Refresh", "type": "string", "jsonPath": ".spec.refreshInterval"},
             *PRINTER,
             {"name": "Changed", "type": "date", "jsonPath": ".status.refreshTime",
              "description": "when the Secret or the status last changed (a quiet poll that "
              "finds the same values writes nothing, so it does not move this)"}],
            ["ackes"],
        ),
        "secretstores.yaml": crd(
            "SecretStore", "secretstores", "Namespaced", obj(STORE_SPEC_PROPS, **ONE_PROVIDER),
            STORE_STATUS, PRINTER, ["ackss"],
        ),
        "clustersecretstores.yaml": crd(
            "ClusterSecretStore", "clustersecretstores", "Cluster", cluster_spec,
            STORE_STATUS, PRINTER, ["ackcss"],
        ),
        "clusterexternalsecrets.yaml": crd(
            "ClusterExternalSecret", "clusterexternalsecrets", "Cluster", CES_SPEC, CES_STATUS,
            [{"name": "Store", "type": "string",
              "jsonPath": ".spec.externalSecretSpec.data[0].secretStoreRef.name"}, *PRINTER],
            ["ackces"],
        ),
    }


class _NoAliasDumper(yaml.SafeDumper):
    """Shared building blocks must be written out in full: no YAML anchors in a CRD."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


HEADER = "# Generated by hack/gen_crds.py; edit that file and run `make crds`.\n"


def _outputs() -> dict[pathlib.Path, str]:
    return {OUT / name: HEADER + _dump(doc) for name, doc in documents().items()}


def _dump(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_NoAliasDumper, sort_keys=False, width=100)


def main() -> int:
    check = "--check" in sys.argv
    stale = []
    for path, text in _outputs().items():
        name = path.name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"stale CRDs: {', '.join(stale)}; run `make crds`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
