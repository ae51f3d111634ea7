"""Generate the KMS v2 plugin's gRPC code from controller/kmsplugin/proto/api.proto.

Why a script: the generated modules pin the protobuf runtime they were made with, so they are
produced by the grpcio-tools of the dev extra (`make proto`) and committed; `make lint` runs
this with --check and fails when the committed files differ from a fresh generation (a changed
.proto, or a grpcio-tools upgrade without regenerating).
Run: python hack/gen_proto.py [--check]
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
PROTO = pathlib.Path("controller/kmsplugin/proto/api.proto")
OUTPUTS = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")


def generate(out: pathlib.Path) -> None:
    from grpc_tools import protoc  # dev extra: grpcio-tools

    # Include root = the repository, so the generated imports are package-absolute
    # (`from controller.kmsplugin.proto import api_pb2`).
    args = ["protoc", f"-I{REPO}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", str(REPO / PROTO)]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {PROTO}")


def main() -> int:
    check = "--check" in sys.argv
    target = REPO / PROTO.parent
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp)
        generate(out)
        stale = []
        for name in OUTPUTS:
            fresh = (out / PROTO.parent / name).read_text()
            committed = target / name
            if check:
                if not committed.exists() or committed.read_text() != fresh:
                    stale.append(str(PROTO.parent / name))
            else:
                committed.write_text(fresh)
    if stale:
        print(f"stale generated code: {', '.join(stale)}; run `make proto`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
