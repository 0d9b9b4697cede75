"""KubeRay manifests (infra/kuberay): valid Kubernetes objects of the right kinds, checked
against schemas transcribed from the KubeRay/Kubernetes types and by Ray's own KubeRay
autoscaler config derivation; private networking; RayJob and RayCluster in sync."""

from __future__ import annotations

import copy
import shlex

import jsonschema
import pytest
import ray
import yaml
from _infra import INFRA
from kube_schema import SCHEMAS
from ray.autoscaler._private.kuberay.autoscaling_config import (
    _derive_autoscaling_config_from_ray_cr,
)

KUBE = INFRA / "kuberay"
EXPECTED_KINDS = {
    "raycluster.yaml": [("ray.io/v1", "RayCluster")],
    "rayjob.yaml": [("ray.io/v1", "RayJob")],
    "mlflow.yaml": [("apps/v1", "Deployment"), ("v1", "Service")],
}


def _docs(name):
    return [d for d in yaml.safe_load_all((KUBE / name).read_text()) if d]


def _validate(doc):
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in SCHEMAS:
        raise jsonschema.ValidationError(f"unexpected object kind {key}")
    jsonschema.validate(doc, SCHEMAS[key])


def test_every_manifest_is_listed():
    assert sorted(p.name for p in KUBE.glob("*.y*ml")) == sorted(EXPECTED_KINDS)


@pytest.mark.parametrize("name", sorted(EXPECTED_KINDS))
def test_manifests_are_valid_objects_of_the_right_kinds(name):
    docs = _docs(name)
    assert [(d["apiVersion"], d["kind"]) for d in docs] == EXPECTED_KINDS[name]
    for doc in docs:
        _validate(doc)
        assert doc["metadata"]["namespace"] == "seqablate"


def _cluster_spec():
    return _docs("raycluster.yaml")[0]["spec"]


def test_schema_rejects_broken_manifests():
    job = _docs("rayjob.yaml")[0]
    cases = []
    bad = copy.deepcopy(job)
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplica"] = 4  # typo
    cases.append(bad)
    bad = copy.deepcopy(job)
    del bad["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]  # required
    cases.append(bad)
    bad = copy.deepcopy(job)
    env = bad["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    env.append({"name": "PORT", "value": 5000})  # env values must be strings
    cases.append(bad)
    bad = copy.deepcopy(job)
    res = bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    res["resources"]["limits"]["memory"] = "28 GB"  # not a Quantity
    cases.append(bad)
    bad = copy.deepcopy(job)
    bad["kind"] = "RayJobs"
    cases.append(bad)
    for case in cases:
        with pytest.raises(jsonschema.ValidationError):
            _validate(case)


@pytest.mark.parametrize("source", ["raycluster", "rayjob"])
def test_ray_derives_a_valid_autoscaling_config(source):
    # Ray's KubeRay autoscaler turns the CR into an autoscaling config and validates it; this is
    # what runs in the head pod, so a spec it cannot read would leave the cluster unscaled.
    if source == "raycluster":
        cr = _docs("raycluster.yaml")[0]
    else:
        job = _docs("rayjob.yaml")[0]
        cr = {"metadata": job["metadata"], "spec": job["spec"]["rayClusterSpec"]}
    cfg = _derive_autoscaling_config_from_ray_cr(copy.deepcopy(cr))
    types = cfg["available_node_types"]
    assert types["headgroup"]["resources"]["CPU"] == 0
    assert types["gpu-1x"]["resources"]["GPU"] == 1
    assert types["gpu-8x"]["resources"]["GPU"] == 8
    assert types["gpu-1x"]["min_workers"] == types["gpu-8x"]["min_workers"] == 0
    assert types["gpu-1x"]["max_workers"] * 1 + types["gpu-8x"]["max_workers"] * 8 >= 64


def test_rayjob_cluster_matches_raycluster():
    assert _docs("rayjob.yaml")[0]["spec"]["rayClusterSpec"] == _cluster_spec()


def test_ray_version_and_image_consistent():
    spec = _cluster_spec()
    assert spec["rayVersion"] == ray.__version__
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    images = {c["image"] for g in groups for c in g["template"]["spec"]["containers"]}
    assert len(images) == 1, f"head and workers must run one image, got {images}"


def test_gpu_requests_equal_limits():
    # Kubernetes rejects extended resources (nvidia.com/gpu) whose request differs from limit.
    for group in _cluster_spec()["workerGroupSpecs"]:
        for c in group["template"]["spec"]["containers"]:
            req, lim = c["resources"]["requests"], c["resources"]["limits"]
            assert req.get("nvidia.com/gpu") == lim.get("nvidia.com/gpu") is not None


def test_nothing_exposed_outside_the_cluster():
    head = _cluster_spec()["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert not head.get("enableIngress", False)
    for name in EXPECTED_KINDS:
        for doc in _docs(name):
            if doc["kind"] == "Service":
                assert doc["spec"].get("type", "ClusterIP") == "ClusterIP"
            assert doc["kind"] != "Ingress"


def test_mlflow_service_selects_its_deployment_and_secrets_come_from_a_secret():
    deploy, svc = _docs("mlflow.yaml")
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    env = {e["name"]: e for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    for secret in ("MLFLOW_BACKEND_STORE_URI", "PGPASSWORD"):
        assert "secretKeyRef" in env[secret]["valueFrom"], f"{secret} must come from a Secret"


def test_rayjob_entrypoint_is_a_valid_study_command():
    entry = shlex.split(_docs("rayjob.yaml")[0]["spec"]["entrypoint"])
    assert entry[:3] == ["python", "-m", "seqablate"]
    from seqablate.cli import build_parser

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert "study" in sub, "seqablate.cli.train must register `study`"
    args = parser.parse_args(entry[3:])
    assert args.storage.startswith("s3://")
    assert args.tracking_uri.startswith("http://mlflow.")
    assert args.workers_per_trial == 1 and args.gpus_per_worker == 1
    from seqablate.cli.train import _external

    assert _external(args.external) == {"oslo": "/data/oslo"}  # NAME=PATH, as the command parses it


def test_every_ray_container_uses_token_authentication():
    for name in ("rayjob.yaml", "raycluster.yaml"):
        doc = _docs(name)[0]
        spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        containers = [c for g in groups for c in g["template"]["spec"]["containers"]]
        assert len(containers) == 3, name
        for c in containers:
            env = {e["name"]: e for e in c["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token", (name, c["name"])
            ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "seqablate-ray-token", "key": "auth_token"}, (name, c["name"])
