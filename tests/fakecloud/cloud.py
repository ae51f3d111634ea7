"""``FakeCloud``: the state of ``state.py`` served on local ports, as a context manager.

``with FakeCloud() as cloud:`` starts plain-http KMS, https KMS (KMS instance
stand-in), https STS, the ECS metadata proxy and optionally the admin API, each
on a free 127.0.0.1 port, with a fresh CA in a temp dir; leaving the block
stops every server, closes every connection and deletes the temp dir.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from .admin import AdminService
from .dkms import DkmsService
from .kms import KmsService
from .metadata import MetadataService
from .oos import OosService
from .server import ServiceServer
from .state import DEFAULT_ACCOUNT_ID, CloudState
from .sts import StsService
from .tls import TlsFiles, server_context, write_tls_files


class FakeCloud(CloudState):
    def __init__(
        self,
        *,
        account_id: str = DEFAULT_ACCOUNT_ID,
        admin: bool = False,
        max_log: int = 200_000,
        nonce_window: float = 900.0,
    ) -> None:
        super().__init__(account_id=account_id, max_log=max_log, nonce_window=nonce_window)
        self._admin = admin
        self._servers: dict[str, ServiceServer] = {}
        self._tmpdir: Path | None = None
        self._tls: TlsFiles | None = None
        self._bundle: Path | None = None
        self.leftover_connections = 0

    # --- lifecycle ------------------------------------------------------------

    def start(self) -> FakeCloud:
        if self._servers:
            raise RuntimeError("FakeCloud already started")
        self._tmpdir = Path(tempfile.mkdtemp(prefix="fakecloud-"))
        try:
            self._tls = write_tls_files(self._tmpdir)
            self._bundle = self._tmpdir / "ca-bundle.pem"
            self._bundle.write_text(self._tls.ca_pem + _system_ca_pem())
            context = server_context(self._tls)
            self._servers = {
                "kms": ServiceServer(KmsService(self), name="kms"),
                "kms-tls": ServiceServer(
                    KmsService(
                        self,
                        service="kms-instance",
                        host_id="kst-fake.cryptoservice.kms.aliyuncs.com",
                    ),
                    name="kms-tls",
                    tls=context,
                ),
                "sts": ServiceServer(StsService(self), name="sts", tls=context),
                "oos": ServiceServer(OosService(self), name="oos"),
                "dkms": ServiceServer(DkmsService(self), name="dkms", tls=context),
                "metadata": ServiceServer(MetadataService(self), name="metadata"),
            }
            if self._admin:
                self._servers["admin"] = ServiceServer(
                    AdminService(self, self.endpoints), name="admin"
                )
            for server in self._servers.values():
                server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every server; ``leftover_connections`` then says how many client
        connections did not close (0 expected)."""
        servers = list(self._servers.values())
        left = [0] * len(servers)

        def stop_one(i: int) -> None:
            left[i] = servers[i].stop()

        # In parallel: each shutdown waits for its accept loop's next poll.
        stoppers = [threading.Thread(target=stop_one, args=(i,)) for i in range(len(servers))]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        self.leftover_connections = sum(left)
        self._servers = {}
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> FakeCloud:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def open_connections(self) -> int:
        """Client connections currently open to any endpoint (0 after stop)."""
        return sum(s.open_connections for s in self._servers.values())

    # --- where things are -----------------------------------------------------

    def _server(self, name: str) -> ServiceServer:
        server = self._servers.get(name)
        if server is None:
            raise RuntimeError(f"FakeCloud has no running {name} server (started? admin=True?)")
        return server

    @property
    def kms_endpoint(self) -> str:
        """Plain http KMS: ``Config(endpoint=..., protocol="http")``."""
        return self._server("kms").endpoint

    @property
    def kms_tls_endpoint(self) -> str:
        """https KMS (instance endpoint stand-in): ``Config(endpoint=..., ca=cloud.ca_file)``."""
        return self._server("kms-tls").endpoint

    @property
    def oos_endpoint(self) -> str:
        """Plain http OOS: ``Config(endpoint=..., protocol="http")``."""
        return self._server("oos").endpoint

    @property
    def dkms_endpoint(self) -> str:
        """https KMS instance gateway for the client-key SDK (trust ``ca_file``)."""
        return self._server("dkms").endpoint

    @property
    def sts_endpoint(self) -> str:
        """https STS, for the credentials library's ``sts_endpoint`` (see ``trust_env``)."""
        return self._server("sts").endpoint

    @property
    def metadata_proxy(self) -> str:
        """ECS metadata server as forward proxy: ``Config(type="ecs_ram_role", proxy=...)``."""
        return f"http://{self._server('metadata').endpoint}"

    @property
    def admin_url(self) -> str:
        return f"http://{self._server('admin').endpoint}"

    def _tls_files(self) -> TlsFiles:
        if self._tls is None:
            raise RuntimeError("FakeCloud not started")
        return self._tls

    @property
    def ca_file(self) -> str:
        return str(self._tls_files().ca_file)

    @property
    def ca_pem(self) -> str:
        return self._tls_files().ca_pem

    @property
    def ca_bundle_file(self) -> str:
        """The fake's CA followed by the usual public roots (for SSL_CERT_FILE)."""
        if self._bundle is None:
            raise RuntimeError("FakeCloud not started")
        return str(self._bundle)

    def trust_env(self) -> dict[str, str]:
        """Environment that makes the credentials library trust the fake STS.

        The library builds its https session with ``ssl.create_default_context()``,
        which reads ``SSL_CERT_FILE`` when the session for an endpoint is first
        created (once per host:port per process). Set it before the first STS
        call; ``REQUESTS_CA_BUNDLE`` is ignored (the SDK calls ``Session.send``)."""
        return {"SSL_CERT_FILE": self.ca_bundle_file}

    def endpoints(self) -> dict[str, str]:
        info = {
            "kms_endpoint": self.kms_endpoint,
            "kms_tls_endpoint": self.kms_tls_endpoint,
            "sts_endpoint": self.sts_endpoint,
            "oos_endpoint": self.oos_endpoint,
            "dkms_endpoint": self.dkms_endpoint,
            "metadata_proxy": self.metadata_proxy,
            "ca_file": self.ca_file,
            "ca_bundle_file": self.ca_bundle_file,
            "account_id": self.account_id,
        }
        if "admin" in self._servers:
            info["admin_url"] = self.admin_url
        return info


def _system_ca_pem() -> str:
    try:
        import certifi

        return "\n" + Path(certifi.where()).read_text()
    except (ImportError, OSError):
        cafile = ssl.get_default_verify_paths().cafile
        return "\n" + Path(cafile).read_text() if cafile else ""
