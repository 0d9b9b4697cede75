"""Ray cluster launcher configs (infra/aws, infra/gcp): every YAML parses, the launcher configs
pass Ray's own validation (offline), and they keep the dashboard/job server private."""

from __future__ import annotations

import copy
import shlex

import jsonschema
import pytest
import ray
import yaml
from _infra import INFRA, REPO, infra_files, world_open_ports
from ray.autoscaler._private.util import prepare_config, validate_config

LAUNCHER_CONFIGS = [INFRA / "aws" / "cluster.yaml", INFRA / "gcp" / "cluster.yaml"]


def _load(path):
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", infra_files(".yaml", ".yml"), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_yaml_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path}: no YAML document"
    assert all(isinstance(d, dict) for d in docs), f"{path}: a document is not a mapping"


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.parent.name)
def test_launcher_config_passes_ray_validation(path):
    # What `ray up` does before touching the cloud: merge the provider defaults, then
    # validate against ray-schema.json and the node-type rules (no network needed).
    prepared = prepare_config(copy.deepcopy(_load(path)))
    validate_config(prepared)
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "trials must never be scheduled on the head"
    gpus = sorted(t["resources"].get("GPU", 0) for n, t in types.items() if n != prepared["head_node_type"])
    assert gpus == [1, 8]
    for name, t in types.items():
        if name != prepared["head_node_type"]:
            assert t["min_workers"] == 0, f"{name}: GPU nodes must scale from zero"
            assert t["max_workers"] >= 1
    # 64 GPUs reachable (the scaling study's largest configuration).
    assert sum(t["resources"].get("GPU", 0) * t["max_workers"] for t in types.values()) >= 64


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.parent.name)
def test_ray_validation_rejects_a_broken_variant(path):
    # The validator is not a rubber stamp: the same file with a typo'd key or a missing head
    # type is refused.
    bad = _load(path)
    bad["available_node_types"]["gpu_1x"]["max_wokers"] = 3
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))
    bad = _load(path)
    bad["head_node_type"] = "nope"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(bad))


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.parent.name)
def test_project_installed_on_every_node(path):
    cfg = _load(path)
    # The working directory is mounted on every node and installed there, with the same
    # Ray version as this machine (mixed versions refuse to form a cluster).
    assert cfg["file_mounts"].get("~/seqablate") == "."
    setup = " ".join(cfg["setup_commands"])
    assert '-e "$HOME/seqablate"' in setup  # $HOME, not a quoted ~ (which bash would not expand)
    assert f"ray[default,tune,train]=={ray.__version__}" in setup
    assert ".venv" in cfg["rsync_exclude"]
    assert not cfg.get("worker_setup_commands")  # workers get exactly the common setup


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.parent.name)
def test_dashboard_and_job_server_not_exposed(path):
    cfg = _load(path)
    start = " ".join(cfg["head_start_ray_commands"])
    args = shlex.split(start.replace(";", " "))
    hosts = [a.split("=", 1)[1] for a in args if a.startswith("--dashboard-host=")]
    assert hosts == ["127.0.0.1"], f"dashboard must bind to loopback only, got {hosts}"
    rules = cfg["provider"].get("security_group", {}).get("IpPermissions", [])
    assert world_open_ports(rules) == []


def test_world_open_port_detector_catches_open_rules():
    assert world_open_ports([{"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp",
                              "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]) == [8265]
    assert world_open_ports([{"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}]) == [
        5000, 6379, 8265, 10001]
    assert world_open_ports([{"FromPort": 8000, "ToPort": 11000, "IpProtocol": "tcp",
                              "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]) == [8265, 10001]
    # SSH to the world, or the dashboard port to a private range, is not "open to the world".
    assert world_open_ports([{"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp",
                              "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]) == []
    assert world_open_ports([{"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp",
                              "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}]) == []


def _strings(node):
    """Every string value (and key) in a parsed YAML document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def test_no_world_cidr_in_any_infra_setting():
    # Ray's GCP launcher takes no firewall section and AWS rules live in IpPermissions
    # (checked above); a world CIDR in any other setting of infra/ is a mistake. Comments
    # (which explain the rule) are not settings: YAML is checked parsed, scripts line by line.
    for path in infra_files():
        if path.suffix in (".yaml", ".yml"):
            values = [s for d in yaml.safe_load_all(path.read_text()) for s in _strings(d)]
        else:
            values = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
        for bad in ("0.0.0.0/0", "::/0"):
            hits = [v for v in values if bad in v]
            assert not hits, f"{path.relative_to(REPO)} sets {bad}: {hits}"


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.parent.name)
def test_token_authentication_on_every_node(path):
    cfg = _load(path)
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/seqablate-cluster.token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in cfg[key] if "ray start" in c]
        assert start and all("export RAY_AUTH_MODE=token;" in c for c in start), key
