"""A stand-in for the `aliyun` CLI's `kms` commands, speaking to the fake cloud's KMS.

Why: docs/encryption-at-rest.md prints real `aliyun kms <Action> --<Param> <value>` commands,
and tests/integration/test_encryption_runbook.py runs the doc's shell blocks as printed; on
PATH as `aliyun`, this sends each as the signed RPC call the CLI would send (2016-01-20 API)
and prints the JSON answer, as the CLI does.

Credentials: ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET; endpoint:
FAKECLOUD_KMS_ENDPOINT (host:port, plain http). `--region` is accepted and ignored.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def parse(argv: list[str]) -> tuple[str, str, dict[str, str]]:
    if len(argv) < 2 or argv[0] != "kms":
        raise SystemExit("usage: aliyun kms <Action> [--Param value ...]")
    action, rest = argv[1], argv[2:]
    params: dict[str, str] = {}
    while rest:
        name = rest.pop(0)
        if not name.startswith("--") or not rest:
            raise SystemExit(f"aliyun: expected --<Param> <value>, got {name!r}")
        params[name[2:]] = rest.pop(0)
    params.pop("region", None)
    return argv[0], action, params


def call(action: str, params: dict[str, str]) -> dict[str, Any]:
    from alibabacloud_tea_openapi import models as api
    from alibabacloud_tea_openapi.client import Client
    from darabonba.runtime import RuntimeOptions

    config = api.Config(access_key_id=os.environ["ALIBABA_CLOUD_ACCESS_KEY_ID"],
                        access_key_secret=os.environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"],
                        endpoint=os.environ["FAKECLOUD_KMS_ENDPOINT"], protocol="http",
                        region_id="cn-hangzhou")
    request = api.OpenApiRequest(query=params)
    spec = api.Params(action=action, version="2016-01-20", protocol="HTTP", pathname="/",
                      method="POST", auth_type="AK", style="RPC", req_body_type="formData",
                      body_type="json")
    answer = Client(config).call_api(spec, request, RuntimeOptions())
    body = answer.get("body") if isinstance(answer, dict) else None
    return body if isinstance(body, dict) else {}


def main(argv: list[str]) -> int:
    _, action, params = parse(argv)
    try:
        body = call(action, params)
    except Exception as exc:  # printed like the CLI's error line
        print(f"ERROR: {type(exc).__name__}: {getattr(exc, 'code', '')} "
              f"{getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
