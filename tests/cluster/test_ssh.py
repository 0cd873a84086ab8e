"""The ssh kind against a real, private sshd on 127.0.0.1 (skipped where no sshd is installed)."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from dask_pipeline.cluster import WORKER_ENV, connect, describe
from dask_pipeline.config import ClusterConfig, SSHConfig

from .conftest import worker_probe

asyncssh = pytest.importorskip("asyncssh", reason="asyncssh is not installed (pip install -e '.[ssh]')")


def find_sshd() -> str | None:
    return shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A private sshd on a free loopback port that lets the current user in with a fresh key."""
    binary = find_sshd()
    if binary is None:
        pytest.skip("no sshd binary installed (e.g. apt-get install openssh-server)")
    if os.geteuid() == 0 and not Path("/run/sshd").is_dir():
        pytest.skip("sshd run as root needs its privilege-separation directory /run/sshd")
    tmp = tmp_path_factory.mktemp("sshd")
    host_key, user_key = tmp / "host_key", tmp / "user_key"
    for path in (host_key, user_key):
        key = asyncssh.generate_private_key("ssh-ed25519")
        key.write_private_key(str(path))
        path.chmod(0o600)
    (tmp / "authorized_keys").write_bytes(asyncssh.read_private_key(str(user_key)).export_public_key())
    port, user = free_port(), getpass.getuser()
    (tmp / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {tmp / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nAllowUsers {user}\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "PermitRootLogin prohibit-password\n"
    )
    log = open(tmp / "sshd.log", "w")
    proc = subprocess.Popen([binary, "-D", "-e", "-f", str(tmp / "sshd_config")], stdout=log, stderr=log)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.skip(f"the private sshd did not start: {(tmp / 'sshd.log').read_text()[-300:]}")
            time.sleep(0.1)
    yield proc, {"port": port, "username": user, "client_keys": [str(user_key)], "known_hosts": None}
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_ssh_cluster_on_loopback(sshd, tmp_path, tls, request):
    import psutil

    from dask_pipeline.config import TLSConfig

    daemon, connect_options = sshd
    section = SSHConfig(
        hosts=["127.0.0.1", "127.0.0.1"], workers_per_host=2, connect_options=connect_options, scheduler_port=0,
        local_directory=str(tmp_path / "scratch"),
    )
    extra = {}
    if tls:
        certs = request.getfixturevalue("certs")
        extra["tls"] = TLSConfig(ca_file=str(certs / "ca.pem"), cert=str(certs / "worker.pem"), key=str(certs / "worker-key.pem"))
    cfg = ClusterConfig(kind="ssh", dashboard=False, memory_limit="1GiB", ssh=section, **extra)
    with connect(cfg) as client:
        client.wait_for_workers(2, timeout=60)
        info = describe(client)
        assert info["kind"] == "ssh" and info["tls"] is tls
        assert info["scheduler"].startswith(("tls" if tls else "tcp") + "://127.0.0.1:")
        assert info["n_workers"] == 2 and info["threads"] == 2 and info["resources"] == {"CPU": 2}
        probe = client.submit(worker_probe(), resources={"CPU": 1}, pure=False).result()
        assert probe["env"] == WORKER_ENV and probe["resources"] == {"CPU": 1} and probe["nthreads"] == 1
        assert probe["local_directory"].startswith(str(tmp_path / "scratch"))
        started = psutil.Process(daemon.pid).children(recursive=True)
        listening = {c.laddr.ip for p in started for c in p.net_connections(kind="inet") if c.status == "LISTEN"}
        assert listening == {"127.0.0.1"}
    # Closing the cluster ends everything it started through sshd.
    _, alive = psutil.wait_procs(started, timeout=15)
    assert alive == []
