"""The cluster section's keys for scale-out and TLS: every mistake fails at load with its dotted key, on one line."""

from __future__ import annotations

import pytest

from dask_pipeline.config import load_config
from dask_pipeline.errors import ConfigError

SSH = {"hosts": ["10.0.0.1", "10.0.0.1", "10.0.0.2"]}
SLURM = {"cores": 32, "memory": "128GiB"}
KUBE = {"image": "img:1"}


def tls_files(tmp_path) -> dict[str, str]:
    for name in ("ca.pem", "c.pem", "k.pem"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
    return {"ca_file": str(tmp_path / "ca.pem"), "cert": str(tmp_path / "c.pem"), "key": str(tmp_path / "k.pem")}


def error(overrides: dict) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_valid_sections_load(tmp_path):
    cluster = load_config(None, {"cluster.kind": "ssh", "cluster.ssh": SSH, "cluster.retries": 2}).cluster
    assert cluster.ssh.hosts[0] == "10.0.0.1" and cluster.ssh.workers_per_host == 1 and cluster.retries == 2
    cluster = load_config(None, {"cluster.kind": "slurm", "cluster.slurm": SLURM}).cluster
    assert cluster.slurm.jobs == 1 and cluster.slurm.processes is None
    cluster = load_config(None, {"cluster.kind": "kubernetes", "cluster.kubernetes": KUBE}).cluster
    assert cluster.kubernetes.resources.requests == {"cpu": "1", "memory": "2Gi"}
    cluster = load_config(None, {"cluster.kind": "address", "cluster.address": "tls://10.0.0.5:8786",
                                 "cluster.tls": tls_files(tmp_path)}).cluster
    assert cluster.tls.cert == str(tmp_path / "c.pem")


@pytest.mark.parametrize("profile", ["ssh", "slurm", "kubernetes"])
def test_repo_scale_out_profiles_load(profile):
    assert load_config(None, {"profile": profile}).cluster.kind == profile


@pytest.mark.parametrize("overrides,expected", [
    ({"cluster.retries": -1}, "'cluster.retries': Input should be greater than or equal to 0"),
    # A section for a kind that is not selected, and a selected kind without its section.
    ({"cluster.ssh": SSH}, "'cluster.ssh': is only used with kind 'ssh' (kind is 'local')"),
    ({"cluster.kind": "address", "cluster.slurm": SLURM}, "'cluster.slurm': is only used with kind 'slurm' (kind is 'address')"),
    ({"cluster.kind": "ssh", "cluster.kubernetes": KUBE, "cluster.ssh": SSH}, "'cluster.kubernetes': is only used with kind 'kubernetes'"),
    ({"cluster.kind": "ssh"}, "'cluster.ssh': is required with kind 'ssh'"),
    ({"cluster.kind": "slurm"}, "'cluster.slurm': is required with kind 'slurm'"),
    ({"cluster.kind": "kubernetes"}, "'cluster.kubernetes': is required with kind 'kubernetes'"),
    ({"cluster.kind": "ssh", "cluster.n_workers": 4, "cluster.ssh": SSH}, "'cluster.n_workers': is not used with kind 'ssh'; set cluster.ssh.workers_per_host"),
    # ssh
    ({"cluster.kind": "ssh", "cluster.ssh": {"hosts": ["a"]}}, "'cluster.ssh.hosts': needs the scheduler host and at least one worker host"),
    ({"cluster.kind": "ssh", "cluster.ssh": {"hosts": ["localhost", "node2"]}}, "'cluster.ssh.hosts': the scheduler host 'localhost' is this machine's loopback"),
    ({"cluster.kind": "ssh", "cluster.ssh": {**SSH, "workers_per_host": 0}}, "'cluster.ssh.workers_per_host': Input should be greater than or equal to 1"),
    ({"cluster.kind": "ssh", "cluster.ssh": {**SSH, "scheduler_port": 70000}}, "'cluster.ssh.scheduler_port': Input should be less than or equal to 65535"),
    ({"cluster.kind": "ssh", "cluster.ssh": {**SSH, "connect_options": "user@host"}}, "'cluster.ssh.connect_options': Input should be a valid dictionary"),
    ({"cluster.kind": "ssh", "cluster.ssh": {**SSH, "nthreads": 2}}, "unknown key 'cluster.ssh.nthreads'"),
    ({"cluster.kind": "ssh", "cluster.ssh": {**SSH, "connect_options": {"password": "x"}}}, "'cluster.ssh.connect_options': holds password"),
    # slurm
    ({"cluster.kind": "slurm", "cluster.slurm": {"cores": 32}}, "'cluster.slurm.memory': required key is missing"),
    ({"cluster.kind": "slurm", "cluster.slurm": {**SLURM, "memory": "lots"}}, "'cluster.slurm.memory': 'lots' is not a size"),
    ({"cluster.kind": "slurm", "cluster.slurm": {**SLURM, "walltime": "2h"}}, "'cluster.slurm.walltime': '2h' is not a SLURM time limit"),
    ({"cluster.kind": "slurm", "cluster.slurm": {**SLURM, "jobs": 0}}, "'cluster.slurm.jobs': Input should be greater than or equal to 1"),
    ({"cluster.kind": "slurm", "cluster.slurm": {**SLURM, "processes": 5}}, "'cluster.slurm': processes 5 does not divide cores 32"),
    ({"cluster.kind": "slurm", "cluster.slurm": {**SLURM, "job_extra_directives": "--exclusive"}}, "'cluster.slurm.job_extra_directives': Input should be a valid list"),
    ({"cluster.kind": "slurm", "cluster.slurm": {**SLURM, "startup_timeout": 0}}, "'cluster.slurm.startup_timeout': Input should be greater than 0"),
    ({"cluster.kind": "slurm", "cluster.slurm": {**SLURM, "queu": "x"}}, "unknown key 'cluster.slurm.queu' (did you mean 'queue'?)"),
    ({"cluster.kind": "slurm", "cluster.memory_limit": "4GiB", "cluster.slurm": SLURM}, "cluster.memory_limit is not used with kind 'slurm'"),
    # kubernetes
    ({"cluster.kind": "kubernetes", "cluster.kubernetes": {"n_workers": 2}}, "'cluster.kubernetes.image': required key is missing"),
    ({"cluster.kind": "kubernetes", "cluster.kubernetes": {**KUBE, "name": "My_Cluster"}}, "'cluster.kubernetes.name': 'My_Cluster' is not a Kubernetes name"),
    ({"cluster.kind": "kubernetes", "cluster.kubernetes": {**KUBE, "n_workers": 0}}, "'cluster.kubernetes.n_workers': Input should be greater than or equal to 1"),
    ({"cluster.kind": "kubernetes", "cluster.kubernetes": {**KUBE, "resources": {"limit": {}}}}, "unknown key 'cluster.kubernetes.resources.limit' (did you mean 'limits'?)"),
    ({"cluster.kind": "kubernetes", "cluster.kubernetes": {**KUBE, "env": ["A=1"]}}, "'cluster.kubernetes.env': Input should be a valid dictionary"),
    ({"cluster.kind": "kubernetes", "cluster.kubernetes": {**KUBE, "namespace": 5}}, "'cluster.kubernetes.namespace': Input should be a valid string"),
])
def test_scale_out_mistakes(overrides, expected):
    assert expected in error(overrides)


def test_tls_mistakes(tmp_path):
    files = tls_files(tmp_path)
    tls_address = {"cluster.kind": "address", "cluster.address": "tls://10.0.0.5:8786"}
    msg = error({**tls_address, "cluster.tls": {**files, "cert": str(tmp_path / "missing.pem")}})
    assert f"'cluster.tls.cert': file not found: {tmp_path / 'missing.pem'}" in msg
    msg = error({**tls_address, "cluster.tls": {**files, "ca_file": "nope/ca.pem", "key": str(tmp_path)}})
    assert "'cluster.tls.ca_file': file not found:" in msg and f"'cluster.tls.key': file not found: {tmp_path}" in msg
    assert "'cluster.tls.key': required key is missing" in error({**tls_address, "cluster.tls": {"ca_file": files["ca_file"], "cert": files["cert"]}})
    assert "'cluster.tls': is required for the tls:// address tls://10.0.0.5:8786" in error(tls_address)
    msg = error({"cluster.kind": "address", "cluster.address": "tcp://10.0.0.5:8786", "cluster.tls": files})
    assert "'cluster.tls': is set but cluster.address tcp://10.0.0.5:8786 is not tls://" in msg
    assert "'cluster.tls': is not used with kind 'local'" in error({"cluster.tls": files})
    assert "'cluster.tls': is not used with kind 'kubernetes'" in error({"cluster.kind": "kubernetes", "cluster.kubernetes": KUBE, "cluster.tls": files})
    assert "unknown key 'cluster.tls.ca'" in error({**tls_address, "cluster.tls": {**files, "ca": "x"}})
    # ssh and slurm start their own scheduler: TLS without an address is fine.
    assert load_config(None, {"cluster.kind": "ssh", "cluster.ssh": SSH, "cluster.tls": files}).cluster.tls is not None
