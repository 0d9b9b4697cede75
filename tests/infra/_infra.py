"""Helpers shared by the infra tests: file discovery and the security / credential scanners.

The scanners are plain functions so each is tested on synthetic offending input as well as
on the real files (a check that cannot fail proves nothing).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"

#: Ports that must never be reachable from the internet: dashboard + job server, Ray
#: client, GCS, MLflow.
PRIVATE_PORTS = (8265, 10001, 6379, 5000)


def infra_files(*suffixes: str) -> list[Path]:
    """Files under ``infra/`` whose name ends with one of ``suffixes`` (all files if none)."""
    files = sorted(p for p in INFRA.rglob("*") if p.is_file())
    return [p for p in files if not suffixes or p.name.endswith(suffixes)]


def _world(cidr: str) -> bool:
    """True for a CIDR that is the whole IPv4 or IPv6 internet."""
    try:
        return ipaddress.ip_network(cidr, strict=False).prefixlen == 0
    except ValueError:
        return False


def world_open_ports(ip_permissions: Iterable[dict[str, Any]]) -> list[int]:
    """Ports of ``PRIVATE_PORTS`` that AWS-style ``IpPermissions`` open to 0.0.0.0/0 or ::/0.

    A rule with protocol ``-1`` (all traffic) or without a port range covers every port.
    """
    opened: set[int] = set()
    for rule in ip_permissions:
        ranges = [r.get("CidrIp", "") for r in rule.get("IpRanges", [])]
        ranges += [r.get("CidrIpv6", "") for r in rule.get("Ipv6Ranges", [])]
        if not any(_world(c) for c in ranges):
            continue
        if str(rule.get("IpProtocol", "tcp")) == "-1" or "FromPort" not in rule:
            lo, hi = 0, 65535
        else:
            lo, hi = int(rule["FromPort"]), int(rule.get("ToPort", rule["FromPort"]))
            if lo == -1:
                lo, hi = 0, 65535
        opened.update(p for p in PRIVATE_PORTS if lo <= p <= hi)
    return sorted(opened)


# Credential patterns: literal secrets, not references to the environment / secret stores.
_SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("AWS access key id", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("GCP service-account key", re.compile(r'"private_key_id"\s*:\s*"[0-9a-f]{20,}"')),
    # user:password@ in a URI, unless the password is a ${VAR} / $VAR reference
    ("password in URI", re.compile(r"://[^\s/:@'\"]+:(?!\$)[^\s/@'\"]+@")),
    # key: value / key=value for secret-ish keys with a literal value (not $VAR, not empty,
    # not a valueFrom/secretKeyRef block)
    (
        "literal secret value",
        re.compile(
            r"(?i)[\w.-]*(password|passwd|secret_access_key|client_secret|api_?key|token)[\"']?"
            r"\s*[:=]\s*[\"']?(?![$<{])[A-Za-z0-9+/_\-]{8,}"
        ),
    ),
)


def find_secrets(text: str) -> Iterator[tuple[int, str, str]]:
    """Yield ``(line_number, kind, line)`` for every line of ``text`` that holds a credential."""
    for no, line in enumerate(text.splitlines(), 1):
        for kind, pattern in _SECRET_PATTERNS:
            if pattern.search(line):
                yield no, kind, line.strip()
