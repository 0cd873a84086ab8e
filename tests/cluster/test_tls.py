"""TLS: a real tls:// scheduler and worker from the scripts, reached through cluster.tls; clear one-line errors."""

from __future__ import annotations

import pytest

from dask_pipeline.cluster import WORKER_ENV, connect, describe
from dask_pipeline.config import ClusterConfig, TLSConfig, load_config
from dask_pipeline.errors import ClusterError, ConfigError

from .conftest import worker_probe


def client_tls(certs) -> TLSConfig:
    return TLSConfig(ca_file=str(certs / "ca.pem"), cert=str(certs / "client.pem"), key=str(certs / "client-key.pem"))


@pytest.fixture
def tls_cluster(script_cluster, certs):
    return script_cluster(n_workers=1, certs=certs)


def test_connect_over_tls_runs_tasks(tls_cluster, certs):
    assert tls_cluster.address.startswith("tls://127.0.0.1:")
    with connect(ClusterConfig(kind="address", address=tls_cluster.address, tls=client_tls(certs))) as client:
        info = describe(client)
        assert info["tls"] is True and info["kind"] == "address" and info["resources"] == {"CPU": 1}
        probe = client.submit(worker_probe(), resources={"CPU": 1}, pure=False).result()
        assert probe["env"] == WORKER_ENV
        assert client.submit(sum, [1, 2, 3]).result() == 6
    assert tls_cluster.close() == []


def test_tls_errors_are_one_clear_line(tls_cluster, certs, foreign_certs, monkeypatch, tmp_path):
    address = tls_cluster.address

    # A tls:// address without cluster.tls fails at load, naming the key.
    with pytest.raises(ConfigError) as err:
        load_config(None, {"cluster.kind": "address", "cluster.address": address})
    assert "'cluster.tls': is required for the tls:// address" in str(err.value) and "\n" not in str(err.value)

    # ... and from the environment, at connect.
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
    with pytest.raises(ClusterError, match=r"speaks TLS: set cluster.tls \(ca_file, cert, key\)"):
        with connect(ClusterConfig(kind="address")):
            pass
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")

    # Certificates from another CA: the handshake fails, and the message says where to look.
    with pytest.raises(ClusterError) as err:
        with connect(ClusterConfig(kind="address", address=address, tls=client_tls(foreign_certs)), timeout=5):
            pass
    msg = str(err.value)
    assert msg.startswith(f"TLS handshake with the scheduler at {address} failed") and "check cluster.tls" in msg
    assert "\n" not in msg

    # Plain TCP to the TLS port: the scheduler hangs up, and the message suggests tls://.
    plain = address.replace("tls://", "tcp://")
    with pytest.raises(ClusterError, match=f"cannot reach the scheduler at {plain}: .*use.* TLS"):
        with connect(ClusterConfig(kind="address", address=plain), timeout=5):
            pass


def test_tls_profile_resolves_relative_paths(certs, monkeypatch):
    monkeypatch.chdir(certs.parent)
    cfg = load_config(None, {"profile": "remote-tls", "cluster.address": "tls://10.0.0.5:8786"})
    assert cfg.cluster.tls.cert == str(certs / "client.pem")
    monkeypatch.chdir(certs)
    with pytest.raises(ConfigError, match=r"'cluster.tls.ca_file': file not found: .*certs/certs/ca.pem"):
        load_config(None, {"profile": "remote-tls", "cluster.address": "tls://10.0.0.5:8786"})


@pytest.mark.parametrize("openssl", [True, False], ids=["make-certs.sh", "cryptography"])
def test_certificates_load_for_every_role(tmp_path, openssl):
    import shutil

    from dask_pipeline.cluster import tls_security

    from .conftest import make_certs

    if openssl and not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    certs = make_certs(tmp_path / "certs", names=("client",), openssl=openssl)
    security = tls_security(client_tls(certs))
    for role in ("client", "scheduler", "worker"):
        assert security.get_connection_args(role)["ssl_context"] is not None
        assert security.get_listen_args(role)["require_encryption"] is True
