"""connect(): local clusters, an existing scheduler started as real subprocesses, fallbacks, errors."""

from __future__ import annotations

import sys

import pytest
from distributed import Client

from dask_pipeline.cluster import connect, describe, visible_gpus
from dask_pipeline.config import ClusterConfig, KubernetesConfig, SlurmConfig, SSHConfig
from dask_pipeline.errors import ClusterError


def test_local_cluster_single_threaded_workers_and_closes_what_it_started():
    cfg = ClusterConfig(n_workers=2, dashboard=False, memory_limit="1GiB")
    with connect(cfg) as client:
        info = describe(client)
        assert info["kind"] == "local" and info["tls"] is False
        assert info["n_workers"] == 2 and info["threads"] == 2
        assert info["dashboard"] is None
        assert info["resources"] == {"CPU": 2}
        env = client.run(lambda: __import__("os").environ.get("OMP_NUM_THREADS"))
        assert set(env.values()) == {"1"}
        address = info["scheduler"]
    assert client.status == "closed"
    with pytest.raises(OSError):
        Client(address, timeout=2)


def test_local_dashboard_binds_to_loopback():
    with connect(ClusterConfig(n_workers=1, dashboard_address="127.0.0.1:0")) as client:
        link = describe(client)["dashboard"]
        assert link is not None and link.startswith("http://127.0.0.1:")


def test_address_reaches_existing_scheduler_and_leaves_it_running(dask_processes):
    cfg = ClusterConfig(kind="address", address=dask_processes.address)
    with connect(cfg) as client:
        assert describe(client)["n_workers"] == 2
        assert client.submit(sum, [1, 2, 3]).result() == 6
    with Client(dask_processes.address, timeout=10) as again:
        assert len(again.scheduler_info()["workers"]) == 2


def test_address_from_environment(dask_processes, monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", dask_processes.address)
    with connect(ClusterConfig(kind="address")) as client:
        assert describe(client)["scheduler"] == dask_processes.address


def test_address_missing_or_unreachable_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with pytest.raises(ClusterError, match="needs cluster.address or DASK_SCHEDULER_ADDRESS"):
        with connect(ClusterConfig(kind="address")):
            pass
    with pytest.raises(ClusterError, match="cannot reach the scheduler at tcp://127.0.0.1:9"):
        with connect(ClusterConfig(kind="address", address="tcp://127.0.0.1:9"), timeout=2):
            pass


@pytest.mark.skipif(visible_gpus() > 0, reason="checks the no-GPU fallback")
def test_local_cuda_without_gpu_falls_back_to_local():
    with connect(ClusterConfig(kind="local-cuda", n_workers=1, dashboard=False)) as client:
        info = describe(client)
        assert info["n_workers"] == 1 and "fell back to local" in info["note"]


SCALE_OUT = {
    "ssh": ("asyncssh", SSHConfig(hosts=["10.0.0.1", "10.0.0.2"])),
    "slurm": ("dask_jobqueue", SlurmConfig(cores=4, memory="8GiB")),
    "kubernetes": ("dask_kubernetes", KubernetesConfig(image="img:1")),
}


@pytest.mark.parametrize("kind", sorted(SCALE_OUT))
def test_scale_out_kinds_without_their_extra_say_what_to_install(kind, monkeypatch):
    module, section = SCALE_OUT[kind]
    monkeypatch.setitem(sys.modules, module, None)  # what an environment without the extra sees
    with pytest.raises(ClusterError, match=rf"^cluster.kind '{kind}' needs the '{kind}' extra: pip install -e '\.\[{kind}\]'$"):
        with connect(ClusterConfig(kind=kind, **{kind: section})):
            pass


def test_ssh_host_that_refuses_is_one_clear_error(monkeypatch):
    pytest.importorskip("asyncssh")
    section = SSHConfig(hosts=["127.0.0.1", "127.0.0.1"], connect_options={"port": 9, "known_hosts": None})
    with pytest.raises(ClusterError) as err:
        with connect(ClusterConfig(kind="ssh", ssh=section), timeout=5):
            pass
    msg = str(err.value)
    assert msg.startswith("cluster.kind 'ssh' could not start:") and "check cluster.ssh.hosts" in msg and "\n" not in msg


def test_a_port_that_is_not_a_dask_scheduler_fails_within_the_timeout():
    """A port that accepts connections but never speaks Dask (an HTTP server, a dashboard): one
    ClusterError within the connect timeout, instead of Client waiting for a handshake forever."""
    import http.server
    import threading
    import time

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # it answers Dask's handshake with 400: not worth a line
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        t0 = time.perf_counter()
        with pytest.raises(ClusterError, match=rf"the scheduler at tcp://127.0.0.1:{port} did not answer as a Dask "
                                               r"scheduler within 3 s"):
            with connect(ClusterConfig(kind="address", address=f"tcp://127.0.0.1:{port}"), timeout=1):
                pass
        assert time.perf_counter() - t0 < 10
    finally:
        server.shutdown()
        server.server_close()


def _deep_sizeof(depth: int = 3000) -> int:
    from dask.sizeof import sizeof

    tree: dict = {}
    node = tree
    for _ in range(depth):  # a worker profile is a call tree of dicts this deep
        node["children"] = {"frame": {}}
        node = node["children"]["frame"]
    return sizeof(tree)


def test_busy_dashboard_port_is_a_note_and_workers_size_deep_dicts():
    """A busy port is one note of ours (no raw UserWarning); workers size a worker
    profile's deep call tree without dask's sizeof recursing (and warning)."""
    import socket
    import warnings

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with connect(ClusterConfig(n_workers=1, dashboard_address=f"127.0.0.1:{port}")) as client:
                info = describe(client)
                sizes = client.run(_deep_sizeof)
    finally:
        busy.close()
    assert f"dashboard port {port} is in use (another dask cluster?), serving it on " in info["note"]
    assert info["dashboard"] is not None and f":{port}/" not in info["dashboard"]
    assert not [w for w in caught if "already in use" in str(w.message)]
    assert all(size > 0 for size in sizes.values())


def test_workers_this_process_started_exit_without_interpreter_teardown(monkeypatch):
    """Their plugin registers the quick exit when the worker closes; other workers' does not."""
    import atexit

    from dask_pipeline.cluster import _exit_now, _worker_setup

    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    _worker_setup(quick_exit=False).teardown(None)
    assert registered == []
    _worker_setup(quick_exit=True).teardown(None)
    assert registered == [_exit_now]
