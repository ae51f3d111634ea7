"""`python -m tests.cluster up|down|env|status`: the local control plane for humans.

`up` starts it in the background and remembers it in a state directory; `env` prints the
kubeconfig to use; `down` stops every process and removes the directory.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import sys
import time

from tests.cluster.controlplane import ControlPlane

STATE_DIR = pathlib.Path(os.environ.get("ASM_CLUSTER_DIR", "/tmp/asm-cluster-up"))
STATE = STATE_DIR / "state.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def up() -> int:
    if STATE.exists():
        state = json.loads(STATE.read_text())
        if all(_alive(p) for p in state["pids"].values()):
            print(f"already up: KUBECONFIG={state['kubeconfig']}")
            return 0
        down()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    cp = ControlPlane(workdir=STATE_DIR)
    cp.start(detach=True)
    state = {
        "url": cp.url,
        "kubeconfig": str(cp.kubeconfig),
        "pids": {name: p.pid for name, p in cp.procs.items()},
    }
    STATE.write_text(json.dumps(state, indent=2))
    print(f"up: {cp.url}\nKUBECONFIG={cp.kubeconfig}")
    return 0


def down() -> int:
    if not STATE.exists():
        shutil.rmtree(STATE_DIR, ignore_errors=True)
        print("down: nothing running")
        return 0
    pids = json.loads(STATE.read_text())["pids"]
    for pid in pids.values():
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
        time.sleep(0.1)
    for pid in pids.values():
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    print("down: stopped")
    return 0


def env() -> int:
    if not STATE.exists():
        print("not up: run `python -m tests.cluster up`", file=sys.stderr)
        return 1
    print(f"export KUBECONFIG={json.loads(STATE.read_text())['kubeconfig']}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "env"])
    cmd = parser.parse_args().command
    return {"up": up, "down": down, "env": env}[cmd]()


if __name__ == "__main__":
    sys.exit(main())
