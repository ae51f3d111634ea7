"""Generate the CRDs in helm/ack-secret-manager/crds/ from one Python description.

The kinds share their building blocks (a data entry, a secret reference, a store's provider
blocks), so they are described once here; `make crds` writes the YAML, and a test fails when
the committed files differ from what this script produces. The store blocks (spec.KMS,
spec.OOS) and the spec.provider names are the installed sources' (controller/providers/
installed.py): each source declares its blocks' schema in its own folder (e.g.
controller/providers/alibaba/shape.py), with the builders of controller/api/schema.py.

This and the sources' shapes are the places the API's schema is written, and they repeat no
bound: every maxItems, maxLength, maxProperties and pattern is a constant of the parser that
enforces it (controller/api/: fields.py, externalsecret.py, secretstore.py,
clusterexternalsecret.py; the endpoint rules of controller/providers/alibaba/stores.py),
imported, so
the apiserver refuses at once what the controller would refuse later (for objects stored before
the schema did, the parser still checks). Every field has a description (`kubectl explain`),
saying what it means to a user, its default and its bound (metadata excepted: the apiserver
supplies ObjectMeta's); tests/unit/test_crd_schema.py checks both.
Run: python hack/gen_crds.py [--check]
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import yaml

from controller import api
from controller.api import clusterexternalsecret as ces_api
from controller.api.schema import MAX_TEXT, arr, bounded, obj, s, text
from controller.clusterexternalsecret import logic as ces
from controller.providers import installed
from controller.providers.alibaba import stores

GROUP = "alibabacloud.com"
SHAPE = installed.shape()  # the provider names and store blocks of the installed sources
OUT = pathlib.Path(__file__).resolve().parents[1] / "helm/ack-secret-manager/crds"

# The parser's bounds (see the module docstring): imported, never written here again.
MAX_NAME = api.MAX_NAME_LENGTH  # a Secret key, an object name
ENDPOINT = {"maxLength": stores.MAX_ENDPOINT, "pattern": stores.ENDPOINT_PATTERN}
SECRET_KEY = {"maxLength": MAX_NAME, "pattern": api.KEY_NAME_PATTERN}
OBJECT_NAME = {"maxLength": MAX_NAME, "pattern": api.DNS_SUBDOMAIN_PATTERN}

# The standard texts of every Kubernetes object's first three fields.
_CONVENTIONS = "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md"
API_VERSION = ("APIVersion defines the versioned schema of this representation of an object. "
               "Servers should convert recognized schemas to the latest internal value, and may "
               f"reject unrecognized values. More info: {_CONVENTIONS}#resources")
KIND = ("Kind is a string value representing the REST resource this object represents. "
        "Servers may infer this from the endpoint the client submits requests to. Cannot be "
        f"updated. In CamelCase. More info: {_CONVENTIONS}#types-kinds")
# metadata takes nothing but its type: the apiserver refuses more ("must not specify anything
# other than name and generateName") and publishes ObjectMeta's own schema and description.
METADATA = {"type": "object"}


def string_map(desc: str, values: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "description": bounded(desc, extra),
            "additionalProperties": values, **extra}


def time(desc: str) -> dict[str, Any]:
    return {"type": "string", "format": "date-time", "description": desc}


def integer(desc: str) -> dict[str, Any]:
    return {"type": "integer", "format": "int64", "description": desc}


def choice(desc: str, values: list[str]) -> dict[str, Any]:
    """An enum; "" is allowed because the parser reads an empty value as the default."""
    return text(desc, enum=["", *values])


def matching(desc: str, pattern: str, message: str) -> dict[str, Any]:
    """A spec string matching `pattern`, checked by a CEL rule so that the apiserver's refusal
    says `message` (a `pattern` keyword would quote the regular expression)."""
    return text(desc, **{"x-kubernetes-validations": [
        {"rule": f"self.matches(r'{pattern}')", "message": message}]})


def interval(desc: str) -> dict[str, Any]:
    return matching(desc, api.INTERVAL_PATTERN,
                    "must be a Go duration such as 30s, 5m, 1h or 1h30m (0 turns it off)")


STORE_REF = obj(
    "The SecretStore or ClusterSecretStore whose identity (and endpoint) reads this entry. "
    "Not set (or empty): the controller's own identity, from its environment "
    "(docs/authentication.md).",
    {
        "name": text("Name of the SecretStore or ClusterSecretStore.", minLength=1),
        "namespace": text("Namespace of the SecretStore. Default: the ExternalSecret's "
                          "namespace; another namespace needs the controller's "
                          "--enable-cross-namespace-secret-store. Ignored for a "
                          "ClusterSecretStore."),
        "kind": choice("SecretStore (default) or ClusterSecretStore.",
                       ["SecretStore", "ClusterSecretStore"]),
    },
    ["name"],
)


def template_ref(source: str) -> dict[str, Any]:
    return obj(
        f"Templates kept in a {source} of the ExternalSecret's namespace.",
        {
            "name": text(f"Name of the {source}.", minLength=1, **OBJECT_NAME),
            "items": arr(
                f"The keys of the {source} that hold templates.",
                obj("One key holding a template.",
                    {"key": text(f"Key of the {source}.", minLength=1, **SECRET_KEY),
                     "templateAs": choice("Values (default): the key's value is one template; "
                                          "KeysAndValues: its key=value lines are a template "
                                          "each.", ["Values", "KeysAndValues"])},
                    ["key"]),
                maxItems=api.MAX_TEMPLATE_ITEMS),
        },
        ["name", "items"],
    )


TEMPLATE_FROM = obj(
    "One source of templates: exactly one of configMap, secret and literal.",
    {
        "configMap": template_ref("ConfigMap"),
        "secret": template_ref("Secret"),
        "literal": text("A template given inline (Go text/template with sprig functions); with "
                        "target Data it is rendered under the Secret key 'literal'."),
        "target": choice("Where the output goes: Data (default, the Secret's data), Labels or "
                         "Annotations (the Secret's metadata).", ["Data", "Labels", "Annotations"]),
    },
)


def data_entry(desc: str) -> dict[str, Any]:
    return obj(
        desc,
        {
            "key": text("Required: the name of the secret in KMS Secrets Manager (with provider "
                        "oos: the name of the OOS encryption parameter).", minLength=1),
            "name": text("The key in the Kubernetes Secret. Default: key. Unused with jmesPath "
                         "and in dataProcess[].extract (their keys come from the value).",
                         **SECRET_KEY),
            "versionStage": text("The KMS version stage to read, e.g. ACSCurrent (default) or "
                                 "ACSPrevious. Not with provider oos (OOS has no stages)."),
            "versionId": text("The KMS version id (with provider oos: the parameter version) to "
                              "read. Default: the version of versionStage."),
            "kmsEndpoint": text("The KMS endpoint for this entry, [https://]host[:port], e.g. a "
                                "KMS instance <instanceId>.cryptoservice.kms.aliyuncs.com. "
                                "Default: the store's spec.KMS.endpoint, else the controller's. "
                                "Hosts under aliyuncs.com only, unless the controller's "
                                "--allowed-endpoints names it. Not with provider oos.",
                                **ENDPOINT),
            "secretStoreRef": STORE_REF,
            "jmesPath": arr(
                "Parse the value as JSON (or YAML) and write each path's result under its "
                "objectAlias; then only these keys are written. A path that matches nothing "
                "fails the entry.",
                obj(
                    "One JMESPath expression and the Secret key for its result.",
                    {
                        "path": text("A JMESPath expression into the value, e.g. "
                                     "friends[0].name. A non-string result is written as JSON "
                                     "(YAML for a YAML value).", minLength=1),
                        "objectAlias": text("The key in the Kubernetes Secret for the result.",
                                            **SECRET_KEY),
                    },
                    ["path", "objectAlias"],
                ),
                maxItems=api.MAX_JMES_PATHS,
            ),
        },
        ["key"],
    )


def es_spec(desc: str) -> dict[str, Any]:
    return obj(
        f"{desc} Every string is at most {MAX_TEXT:,} characters unless its field says "
        "otherwise; set at least one entry in data or dataProcess.",
        {
            "provider": matching(
                "Where the values come from: "
                + "; ".join(source.provider_doc for source in SHAPE.sources) + ". Any case.",
                SHAPE.provider_pattern,
                f"must be {api.one_of(list(SHAPE.names))} (empty: {SHAPE.default_provider})"),
            "type": text("The type of the Kubernetes Secret, e.g. kubernetes.io/tls. Default: "
                         "Opaque. The keys a type requires are checked before writing."),
            "refreshInterval": interval(
                "How often to read the values again (a Go duration: 30s, 5m, 1h; 0: never, "
                "sync on change only). Default: the controller's --polling-interval. Kept "
                "within the controller's --min-refresh-interval and --max-refresh-interval "
                "(the status says when it was raised or lowered)."),
            "rotationInterval": interval("ack-secret-manager v0.6's name of refreshInterval "
                                         "(used when refreshInterval is not set)."),
            "data": arr("Values to read, one secret each, written under their own key.",
                        data_entry("One secret to read and the Secret key to write it under."),
                        maxItems=api.MAX_DATA),
            "dataProcess": arr(
                "Values to split: each secret's JSON (or YAML) object becomes one Secret key per "
                "top-level key (nested values JSON-encoded).",
                obj(
                    "One secret to split, and how to rename its keys.",
                    {
                        "extract": data_entry("The secret to read and split (the fields of a "
                                              "data entry; name is unused)."),
                        "replaceRule": arr(
                            "Renames of the extracted keys, applied in order.",
                            obj(
                                "One rename: Go regexp.ReplaceAllString(key, source, target).",
                                {"source": text("A regular expression (Go RE2 syntax) matched "
                                                "against each key name.", minLength=1),
                                 "target": text("The replacement; $1 or ${name} insert a "
                                                "group of source.")},
                                ["source"],
                            ),
                            maxItems=api.MAX_REPLACE_RULES,
                        ),
                    },
                    ["extract"],
                ),
                maxItems=api.MAX_DATA_PROCESS,
            ),
            "target": obj(
                "The Kubernetes Secret written, and how.",
                {
                    "name": text("Name of the Kubernetes Secret. Default: the ExternalSecret's "
                                 "name.", **OBJECT_NAME),
                    "creationPolicy": choice(
                        "Owner (default): create the Secret and own it. Merge: add these keys "
                        "to an existing Secret, leaving its other keys, owner and type alone. "
                        "Orphan: create it without an owner reference.",
                        ["Owner", "Merge", "Orphan"]),
                    "deletionPolicy": choice(
                        "Delete (default): an owned Secret is deleted with the ExternalSecret. "
                        "Retain: it stays. With Merge the keys stay either way.",
                        ["Delete", "Retain"]),
                    "template": obj(
                        "Shape the Secret with Go templates (text/template with sprig "
                        "functions) over the values read; see docs/templates.md.",
                        {
                            "type": text("The type of the Kubernetes Secret (instead of "
                                         "spec.type; setting both differently is refused)."),
                            "metadata": obj(
                                "Labels and annotations of the Secret.",
                                {
                                    "labels": string_map(
                                        "Labels of the Secret, each a template (a text "
                                        "without {{ is itself). The controller's own "
                                        "(alibabacloud.com/...) are refused.",
                                        text("A label value or a template giving it."),
                                        maxProperties=api.MAX_TEMPLATE_ITEMS),
                                    "annotations": string_map(
                                        "Annotations of the Secret, each a template (a text "
                                        "without {{ is itself). The controller's own "
                                        "(alibabacloud.com/...) are refused.",
                                        text("An annotation value or a template giving it."),
                                        maxProperties=api.MAX_TEMPLATE_ITEMS),
                                },
                            ),
                            "data": string_map(
                                "Secret key -> a template over the values read "
                                "(docs/templates.md).",
                                text("A Go template."),
                                maxProperties=api.MAX_TEMPLATE_ITEMS),
                            "mergePolicy": choice(
                                "Replace (default): the Secret holds only the templates' "
                                "output. Merge: the values read too.", ["Replace", "Merge"]),
                            "engineVersion": choice("v2, the only engine (Go text/template "
                                                    "with sprig functions).", ["v2"]),
                            "templateFrom": arr("More templates: from a ConfigMap or Secret "
                                                "of this namespace, or inline.", TEMPLATE_FROM,
                                                maxItems=api.MAX_TEMPLATE_FROM),
                        },
                        **{"x-kubernetes-preserve-unknown-fields": True},
                    ),
                },
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


ES_SPEC = es_spec("What to read from Alibaba Cloud and the Kubernetes Secret to write it to.")


def conditions(desc: str, types: str = "Ready.") -> dict[str, Any]:
    return arr(
        desc,
        obj(
            "One condition (the Kubernetes convention).",
            {
                "type": s(f"The kind of condition: {types}"),
                "status": s("True, False or Unknown."),
                "reason": s("Why, in one CamelCase word, e.g. Synced, InvalidSpec, "
                            "CredentialsNotFound (docs/usage.md lists them)."),
                "message": s("Why, for a human: the object, the field and the fix. Never a "
                             "secret value."),
                "lastTransitionTime": time("When status last changed."),
                "observedGeneration": integer("The metadata.generation this condition is "
                                              "about."),
            },
            ["type", "status"],
        ),
        **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


ES_STATUS = obj(
    "What the controller last did (written by the controller).",
    {
        "conditions": conditions("Ready: True (Synced) or False with a reason; Degraded: True "
                                 "while reads fail transiently but the data is fresh.",
                                 "Ready, or Degraded (reads fail for a while but the data is "
                                 "still fresh)."),
        "observedGeneration": integer("The metadata.generation of the spec last synced."),
        "refreshTime": time("When the Secret's content or this status last changed (a quiet "
                            "poll that finds the same values writes nothing, so it does not "
                            "move this)."),
        "lastSyncTime": time("The last sync that ended Ready (written or confirmed unchanged); "
                             "refreshed at most once per interval, so it may lag the last "
                             "check by up to one interval."),
        "secretName": s("Name of the Kubernetes Secret written."),
        "dataSyncResults": arr(
            "One result per entry of the last sync.",
            obj(
                "The result of one entry.",
                {
                    "entry": s("Which entry: data[i] or dataProcess[i].extract."),
                    "KMSSecretKey": s("The KMS secret (or OOS parameter) this entry reads "
                                      "(ack-secret-manager v0.6's key)."),
                    "ExternalSecretKey": s("The same name under the key newer "
                                           "ack-secret-manager releases write."),
                    "versionId": s("The version synced."),
                    "status": s("Synced or Failed."),
                    "reason": s("Why it failed (empty when Synced)."),
                    "synchronizationTime": time("When this entry's result last changed."),
                },
            ),
        ),
    },
)


def one_provider(fields: list[str]) -> dict[str, Any]:
    """The CEL rule a store's spec keeps: exactly one provider block set."""
    has = [f"has(self.{f})" for f in fields]
    rule = " != ".join(has) if len(has) == 2 else f"[{', '.join(has)}].filter(x, x).size() == 1"
    return {"x-kubernetes-validations": [
        {"rule": rule, "message": "set exactly one provider: "
         + api.one_of([f"spec.{f}" for f in fields])}]}


# The store blocks the installed sources own (controller/providers/installed.py), each with
# the schema its source declares.
STORE_SPEC_PROPS: dict[str, Any] = {b.field: dict(b.schema) for b in SHAPE.blocks}
ONE_PROVIDER = one_provider(list(STORE_SPEC_PROPS))

STORE_STATUS = obj(
    "What the controller found about this store (written by the controller).",
    {"conditions": conditions("Ready: whether the store can be used as written.")},
)

_OPERATOR = ("In, NotIn, Exists or DoesNotExist.", ["In", "NotIn", "Exists", "DoesNotExist"])
_EXPRESSION_KEY = "The label key."
_EXPRESSION_VALUES = "The label values: some with In and NotIn, none with Exists and DoesNotExist."

# A ClusterSecretStore's conditions: api.py reads them without count bounds.
CLUSTER_CONDITIONS = arr(
    "Namespaces that may use this store; a namespace any condition admits may. None: every "
    "namespace.",
    obj(
        "One condition; any of its criteria admits a namespace.",
        {
            "namespaces": arr("Namespace names.", s("A namespace name.")),
            "namespaceRegexes": arr("Regular expressions (Go RE2) on namespace names.",
                                    s("A regular expression.")),
            "namespaceSelector": obj(
                "A label selector over the namespace's labels ({} selects every namespace).",
                {
                    "matchLabels": string_map("Labels a namespace must have, all of them.",
                                              s("A label value.")),
                    "matchExpressions": arr(
                        "Requirements a namespace's labels must meet, all of them.",
                        obj("One requirement.",
                            {"key": text(_EXPRESSION_KEY),
                             "operator": text(_OPERATOR[0], enum=_OPERATOR[1]),
                             "values": arr(_EXPRESSION_VALUES, s("A label value."))},
                            ["key", "operator"]),
                    ),
                },
            ),
        },
    ),
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
def ces_selector(desc: str) -> dict[str, Any]:
    return obj(
        f"{desc} A label selector over the namespace's labels ({{}} selects every namespace).",
        {
            "matchLabels": string_map("Labels a namespace must have, all of them.",
                                      text("A label value."),
                                      maxProperties=ces_api.MAX_METADATA_ITEMS),
            "matchExpressions": arr(
                "Requirements a namespace's labels must meet, all of them.",
                obj("One requirement.",
                    {"key": text(_EXPRESSION_KEY),
                     "operator": text(_OPERATOR[0], enum=_OPERATOR[1]),
                     "values": arr(_EXPRESSION_VALUES, text("A label value."),
                                   maxItems=ces_api.MAX_NAMESPACES)},
                    ["key", "operator"]),
                maxItems=ces_api.MAX_CONDITIONS,
            ),
        },
    )


CES_SPEC = obj(
    f"An ExternalSecret spec to create in every namespace the selectors choose (at most "
    f"{ces_api.MAX_NAMESPACES:,} namespaces). Every string is at most {MAX_TEXT:,} characters "
    "unless its field says otherwise.",
    {
        "externalSecretSpec": es_spec(
            "Required: the spec of the ExternalSecret created in each selected namespace (every "
            "ExternalSecret field); each then syncs as any ExternalSecret does, its store "
            "resolved in its own namespace."),
        "externalSecretName": text("Name of the ExternalSecrets. Default: the "
                                   "ClusterExternalSecret's name.", minLength=1, **OBJECT_NAME),
        "externalSecretMetadata": obj(
            "Labels and annotations of the ExternalSecrets.",
            {"labels": string_map(f"Labels of each ExternalSecret ({ces_api.OWNER_LABEL} is the "
                                  "controller's).", text("A label value."),
                                  maxProperties=ces_api.MAX_METADATA_ITEMS),
             "annotations": string_map("Annotations of each ExternalSecret.",
                                       text("An annotation value."),
                                       maxProperties=ces_api.MAX_METADATA_ITEMS)},
        ),
        "conditions": arr(
            "Namespaces to create the ExternalSecret in; conditions are ORed. None of "
            "conditions, namespaceSelectors and namespaceSelector: every namespace.",
            obj(
                "One condition; a namespace is chosen when any of its criteria matches.",
                {
                    "namespaceSelector": ces_selector("Namespaces by label."),
                    "namespaces": arr("Namespace names.", text("A namespace name.", minLength=1),
                                      maxItems=ces_api.MAX_NAMESPACES),
                    "namespaceRegexes": arr("Regular expressions (Go RE2) on namespace names.",
                                            text("A regular expression."),
                                            maxItems=ces_api.MAX_NAMESPACES),
                },
            ),
            maxItems=ces_api.MAX_CONDITIONS,
        ),
        "namespaceSelectors": arr("Label selectors, ORed with conditions (ack-secret-manager's "
                                  "older field, deprecated there in favour of conditions).",
                                  ces_selector("One selector."), maxItems=ces_api.MAX_CONDITIONS),
        "namespaceSelector": ces_selector("One label selector, ORed with conditions (External "
                                          "Secrets Operator's spelling)."),
        "rotationInterval": interval("How often every namespace is checked again besides watch "
                                     "events (a Go duration such as 1h). Default: on change "
                                     "only."),
        "refreshTime": interval("External Secrets Operator's name of rotationInterval (used "
                                "when rotationInterval is not set)."),
    },
    ["externalSecretSpec"],
)
CES_STATUS = obj(
    "What the controller last did (written by the controller).",
    {
        "externalSecretName": s("Name of the ExternalSecrets created."),
        "observedGeneration": integer("The metadata.generation of the spec last acted on."),
        "provisionedNamespaces": arr("Namespaces where its ExternalSecret is in place.",
                                     s("A namespace name.")),
        "failedNamespaces": arr(
            f"Namespaces where its ExternalSecret could not be written, and why (the first "
            f"{ces.MAX_FAILED_LISTED}).",
            obj("One namespace and its failure.",
                {"namespace": s("The namespace."),
                 "reason": s(f"Why (at most {ces.MAX_REASON} characters).")},
                ["namespace"]),
        ),
        "conditions": conditions("Ready: True (Provisioned) or False (NamespacesFailed, "
                                 "TooManyNamespaces, InvalidSpec)."),
    },
)


# Short names that External Secrets Operator's CRDs do not use (es, ss, css, ces are theirs:
# with both installed, `kubectl get es` would list one project's objects silently), and one
# category: `kubectl get ack-secret-manager -A` lists all four kinds.
CATEGORY = "ack-secret-manager"


def crd(kind: str, plural: str, scope: str, spec: dict[str, Any], status: dict[str, Any],
        columns: list[dict[str, Any]], short: list[str], desc: str) -> dict[str, Any]:
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
                            desc,
                            {"apiVersion": s(API_VERSION), "kind": s(KIND),
                             "metadata": METADATA,
                             "spec": spec, "status": status},
                            ["spec"],
                        )
                    },
                }
            ],
        },
    }


STORE_SPEC = ("Where and as whom to read: exactly one provider, KMS or OOS. An ExternalSecret "
              "entry uses it through secretStoreRef.")


def documents() -> dict[str, dict[str, Any]]:
    cluster_spec = obj(f"{STORE_SPEC} Credential Secrets and ServiceAccounts must name their "
                       "namespace.", {**STORE_SPEC_PROPS, "conditions": CLUSTER_CONDITIONS},
                       **ONE_PROVIDER)
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
            "Keeps a Kubernetes Secret in step with secrets in Alibaba Cloud KMS Secrets "
            "Manager (or OOS encryption parameters). docs/usage.md describes every field.",
        ),
        "secretstores.yaml": crd(
            "SecretStore", "secretstores", "Namespaced", obj(STORE_SPEC, STORE_SPEC_PROPS,
                                                             **ONE_PROVIDER),
            STORE_STATUS, PRINTER, ["ackss"],
            "An identity and endpoint for the ExternalSecrets of its namespace to read with "
            "(docs/authentication.md).",
        ),
        "clustersecretstores.yaml": crd(
            "ClusterSecretStore", "clustersecretstores", "Cluster", cluster_spec,
            STORE_STATUS, PRINTER, ["ackcss"],
            "An identity and endpoint for ExternalSecrets of every namespace its conditions "
            "admit to read with; the cluster admin's object (docs/authentication.md).",
        ),
        "clusterexternalsecrets.yaml": crd(
            "ClusterExternalSecret", "clusterexternalsecrets", "Cluster", CES_SPEC, CES_STATUS,
            [{"name": "Store", "type": "string",
              "jsonPath": ".spec.externalSecretSpec.data[0].secretStoreRef.name"}, *PRINTER],
            ["ackces"],
            "Creates the same ExternalSecret in every namespace its selectors choose, and keeps "
            "that set in step as namespaces come and go; the cluster admin's object.",
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
    for path, written in _outputs().items():
        name = path.name
        if check:
            if not path.exists() or path.read_text() != written:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(written)
    if stale:
        print(f"stale CRDs: {', '.join(stale)}; run `make crds`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
