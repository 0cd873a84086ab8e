"""The kubernetes kind: the DaskCluster resource it generates, checked against the shipped manifest and the operator's CRD."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import yaml

from dask_pipeline.cluster import WORKER_ENV, kubernetes_cluster_spec
from dask_pipeline.config import load_config

from .conftest import CLUSTER

dask_kubernetes = pytest.importorskip("dask_kubernetes", reason="dask-kubernetes is not installed (pip install -e '.[kubernetes]')")

MANIFEST = CLUSTER / "kubernetes" / "daskcluster.yaml"


@functools.cache
def crd_schema() -> dict:
    """The DaskCluster openAPIV3Schema the installed operator registers (its Helm chart's CRD)."""
    crd = Path(dask_kubernetes.__file__).parent / "operator/deployment/helm/dask-kubernetes-operator/crds/daskcluster.yaml"
    if not crd.is_file():
        pytest.skip(f"this dask-kubernetes ships no resolved CRD at {crd}")
    return yaml.safe_load(crd.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_profile_generates_the_shipped_manifest():
    spec = kubernetes_cluster_spec(load_config(None, {"profile": "kubernetes"}).cluster)
    assert spec == yaml.safe_load(MANIFEST.read_text())


@pytest.mark.parametrize("source", ["manifest", "generated"])
def test_resource_is_valid_for_the_operator(source):
    jsonschema = pytest.importorskip("jsonschema")
    if source == "manifest":
        resource = yaml.safe_load(MANIFEST.read_text())
    else:
        resource = kubernetes_cluster_spec(load_config(None, {
            "cluster.kind": "kubernetes",
            "cluster.kubernetes": {"image": "img:1", "n_workers": 3, "resources": {"requests": {"cpu": 1}}},
        }).cluster)
    jsonschema.validate(resource, crd_schema())
    assert resource["apiVersion"] == "kubernetes.dask.org/v1" and resource["kind"] == "DaskCluster"


def test_config_reaches_the_pods():
    cfg = load_config(None, {
        "cluster.kind": "kubernetes", "cluster.threads_per_worker": 2, "cluster.memory_limit": "3GiB",
        "cluster.kubernetes": {"name": "wf-42", "image": "img:2", "n_workers": 5, "env": {"EXTRA": 7},
                               "resources": {"requests": {"cpu": 2, "memory": "3Gi"}, "limits": {"memory": "3Gi"}}},
    }).cluster
    spec = kubernetes_cluster_spec(cfg)
    assert spec["metadata"]["name"] == "wf-42"
    worker_group = spec["spec"]["worker"]
    assert worker_group["replicas"] == 5
    (worker,) = worker_group["spec"]["containers"]
    (scheduler,) = spec["spec"]["scheduler"]["spec"]["containers"]
    assert worker["image"] == scheduler["image"] == "img:2"
    args = worker["args"]
    assert args[:2] == ["dask", "worker"] and scheduler["args"][:2] == ["dask", "scheduler"]
    assert args[args.index("--resources") + 1] == "CPU=1"
    assert args[args.index("--nthreads") + 1] == "2" and args[args.index("--memory-limit") + 1] == "3GiB"
    env = {e["name"]: e["value"] for e in worker["env"]}
    assert env == {**WORKER_ENV, "EXTRA": "7"}
    assert worker["resources"] == {"requests": {"cpu": "2", "memory": "3Gi"}, "limits": {"memory": "3Gi"}}
    assert worker["resources"] is not scheduler["resources"]
    assert spec["spec"]["scheduler"]["service"]["type"] == "ClusterIP"


def test_without_credentials_one_clear_error(monkeypatch, tmp_path):
    from dask_pipeline.cluster import connect
    from dask_pipeline.errors import ClusterError

    # An empty home and no in-cluster service account: kubectl would find no cluster either.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    if Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists():
        pytest.skip("running inside a Kubernetes pod: credentials exist")
    cfg = load_config(None, {"cluster.kind": "kubernetes", "cluster.kubernetes": {"image": "img:1"}}).cluster
    with pytest.raises(ClusterError) as err:
        with connect(cfg):
            pass
    msg = str(err.value)
    assert msg.startswith("cluster.kind 'kubernetes' could not start:") and "check kubectl access" in msg
    assert "\n" not in msg
