"""A throwaway SSH/SFTP server on 127.0.0.1 for the sharing tests: asyncssh in a background thread with its own event
loop, a host key and one authorized client key generated for the run, every session chrooted to one folder. Nothing
else on the network; the user's ~/.ssh and ssh-agent are never read (see ``client_env``)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

USER = "fairquant"


@dataclass
class SFTPServer:
    """The running server: where it listens, the folder it serves as ``/``, the key a client logs in with, and the
    user names that logged in (so a test can tell that DVC really went through it)."""

    root: Path
    port: int
    client_key: Path
    logins: list[str] = field(default_factory=list)

    def remote_config(self, path: str = "/fairquant-remote") -> list[str]:
        """The `dvc remote modify --local shared ...` commands that point a clone's default remote at this server."""
        return [f"dvc remote modify --local shared url ssh://127.0.0.1:{self.port}{path}",
                f"dvc remote modify --local shared user {USER}",
                f"dvc remote modify --local shared keyfile {self.client_key}"]


def client_env(env: dict, home: Path) -> dict:
    """``env`` for a dvc client of the test server: a throwaway HOME (no ~/.ssh/config or keys of the user's) and no
    ssh-agent (dvc-ssh would offer its keys and forward it)."""
    home.mkdir(parents=True, exist_ok=True)
    return {**{k: v for k, v in env.items() if k != "SSH_AUTH_SOCK"}, "HOME": str(home)}


def _server_class(logins: list[str], user: str, key: asyncssh.SSHKey):
    """Public-key logins only, as ``user`` with ``key``; each completed login is recorded."""

    class Server(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            self.username = username
            return True

        def public_key_auth_supported(self) -> bool:
            return True

        def validate_public_key(self, username: str, offered: asyncssh.SSHKey) -> bool:
            return username == user and offered.public_data == key.public_data

        def auth_completed(self) -> None:
            logins.append(self.username)

    return Server


def start(folder: Path) -> tuple[SFTPServer, callable]:
    """Start a server under ``folder`` (keys in ``folder/keys``, served files in ``folder/root``); returns it and a
    stop function."""
    keys, root = folder / "keys", folder / "root"
    keys.mkdir(parents=True)
    root.mkdir()
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key.write_private_key(keys / "client")  # unencrypted: an encrypted key makes dvc-ssh prompt
    (keys / "client").chmod(0o600)
    client_key.write_public_key(keys / "client.pub")
    logins: list[str] = []

    def sftp(chan):
        return asyncssh.SFTPServer(chan, chroot=str(root).encode())

    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict = {}

    def run():
        asyncio.set_event_loop(loop)

        async def listen():
            return await asyncssh.listen("127.0.0.1", 0, server_host_keys=[host_key],
                                         server_factory=_server_class(logins, USER, client_key), sftp_factory=sftp,
                                         allow_scp=False)

        try:
            box["acceptor"] = loop.run_until_complete(listen())
        except BaseException as error:  # surfaced to the caller, not lost in the thread
            box["error"] = error
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="sftp-server", daemon=True)
    thread.start()
    started.wait(30)
    if "error" in box:
        raise box["error"]
    acceptor = box["acceptor"]
    server = SFTPServer(root=root, port=acceptor.get_port(), client_key=keys / "client", logins=logins)

    def stop():
        async def close():
            acceptor.close()
            await acceptor.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()

    return server, stop
