"""A real OpenSSH server on loopback for the storage tests: fsspec's sftp talks to it as it
would to a production file server, with a host key and an authorized user key generated in a
temporary folder, so nothing on the machine's own sshd or ~/.ssh is read or changed."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.polling import free_port

SSHD = "/usr/sbin/sshd"


def unavailable() -> str | None:
    """Why a test sshd cannot run here, or None when it can."""
    if not Path(SSHD).is_file():
        return "OpenSSH server not installed (apt-get install openssh-server; `make test` does " \
               "it as root)"
    if not shutil.which("ssh-keygen"):
        return "ssh-keygen not installed"
    if os.geteuid() != 0:
        return "sshd needs root to switch to the logged-in user"
    return None


@dataclass(frozen=True)
class Sshd:
    port: int
    user: str
    key_file: Path
    root: Path  # the folder the storage URL points at

    def url(self, sub: str = "store") -> str:
        return f"sftp://{self.user}@127.0.0.1:{self.port}{self.root / sub}"


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, capture_output=True)


@contextmanager
def sshd(folder: Path) -> Iterator[Sshd]:
    """sshd -D on 127.0.0.1:<free port>, public key login only; stopped at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    host_key, user_key = folder / "host_ed25519", folder / "user_ed25519"
    _keygen(host_key)
    _keygen(user_key)
    authorized = folder / "authorized_keys"
    authorized.write_text(Path(f"{user_key}.pub").read_text())
    authorized.chmod(0o600)
    port = free_port()
    conf = folder / "sshd_config"
    conf.write_text("\n".join([
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}",
        "StrictModes no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "Subsystem sftp internal-sftp",
        "",
    ]))
    Path("/run/sshd").mkdir(exist_ok=True)  # its privilege separation folder
    log = (folder / "sshd.log").open("wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(conf), "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(folder / 'sshd.log').read_text()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("sshd did not listen within 15 s") from None
                time.sleep(0.1)
        root = folder / "data"
        root.mkdir()
        yield Sshd(port=port, user=getpass.getuser(), key_file=user_key, root=root)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
