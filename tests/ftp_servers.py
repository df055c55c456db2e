"""Real FTP, FTPS (explicit, AUTH TLS, with a trustme certificate) and SFTP servers on
loopback for the ftp checks' tests: pyftpdlib in a thread, and asyncssh's SFTP server.
Each serves a directory holding `backup.tar` (1024 bytes) to the user `probe`."""

from __future__ import annotations

import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import asyncssh
import trustme

with warnings.catch_warnings():
    # pyftpdlib still imports asyncore (deprecated since Python 3.10) on 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
    from pyftpdlib.ioloop import IOLoop
    from pyftpdlib.servers import FTPServer

from helpers import free_port

USER = "probe"
PASSWORD = "ftp-secret"


def fill(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "backup.tar").write_bytes(b"x" * 1024)
    old = root / "old.log"
    old.write_text("old")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))


class Ftp:
    """pyftpdlib: plain FTP, or explicit FTPS with `cert` (passive ports on loopback)."""

    def __init__(self, root: Path, cert: trustme.LeafCert | None = None) -> None:
        self.root = root
        self.port = free_port()
        fill(root)
        authorizer = DummyAuthorizer()
        authorizer.add_user(USER, PASSWORD, str(root), perm="elr")
        handler: Any
        if cert is None:
            handler = type("Plain", (FTPHandler,), {})
        else:
            pem = root.parent / f"{root.name}-cert.pem"
            cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
            handler = type("Tls", (TLS_FTPHandler,), {"certfile": str(pem), "keyfile": str(pem)})
            handler.tls_control_required = True
            handler.tls_data_required = True
        handler.authorizer = authorizer
        handler.passive_ports = range(40000, 40999)
        handler.banner = "tocsin test ftp"
        # An I/O loop of its own: pyftpdlib's default one is shared by every server of the
        # process (two servers in two threads would share, and close, one loop).
        self.server = FTPServer(("127.0.0.1", self.port), handler, ioloop=IOLoop())
        self.server.max_cons = 64
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"timeout": 0.2}, daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.close_all()
        self.thread.join(timeout=10)


class _Auth(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return (username, password) == (USER, PASSWORD)


class Sftp:
    """asyncssh's SFTP server, chrooted to `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        fill(root)
        self.server: asyncssh.SSHAcceptor | None = None

    async def start(self) -> None:
        key = asyncssh.generate_private_key("ssh-ed25519")
        root = str(self.root)
        self.server = await asyncssh.listen(
            "127.0.0.1",
            self.port,
            server_host_keys=[key],
            server_factory=_Auth,
            sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=root),
        )

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
