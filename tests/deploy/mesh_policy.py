"""Sidecar Envoys for the mesh's security, generated from istio/ the way istiod configures
them, so the policy test enforces the policies the cluster would enforce.

- `inbound_bootstrap`: a workload's inbound sidecar. PeerAuthentication `STRICT` becomes a
  TLS listener that demands a client certificate signed by the mesh CA; the workload's
  AuthorizationPolicy (action ALLOW) becomes Envoy's RBAC HTTP filter, one policy per
  rule: the rule's `source.principals` as the peer certificate's SPIFFE URI
  (`spiffe://<principal>`, which Istio's workload certificates carry), its
  `operation.paths` (exact, `prefix*`, `*suffix` or `*`, as Istio reads them) and `ports`
  as the permissions. A port is the request's destination port, which in a pod is the
  container port the sidecar intercepted; here the listener stands for it (`ports` maps
  the container port to the listener's). Requests pass to the workload in plain text on
  loopback, over HTTP/2 (gRPC) or HTTP/1.1 (REST).
- `outbound_bootstrap`: a calling workload's sidecar: plain HTTP/2 from the workload,
  mutual TLS to the callee's inbound sidecar with the caller's own certificate, the
  callee's certificate checked for its SPIFFE URI (Istio's secure naming).

What it cannot translate (other actions, `when` conditions, other source or operation
fields, PERMISSIVE mode) it refuses, so the test never enforces a policy other than the
one in istio/."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.deploy.mesh import UntranslatableError

EXTENSIONS = "type.googleapis.com/envoy.extensions"
TLS = "envoy.transport_sockets.tls"
RBAC = f"{EXTENSIONS}.filters.http.rbac.v3.RBAC"
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": f"{EXTENSIONS}.filters.http.router.v3.Router"},
}
MANAGER = f"{EXTENSIONS}.filters.network.http_connection_manager.v3.HttpConnectionManager"
DOWNSTREAM_TLS = f"{EXTENSIONS}.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM_TLS = f"{EXTENSIONS}.transport_sockets.tls.v3.UpstreamTlsContext"
HTTP2_UPSTREAM = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}
LOOPBACK = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}


def spiffe(principal: str) -> str:
    """Istio's principal `cluster.local/ns/<ns>/sa/<sa>` as its certificate's URI SAN."""
    return f"spiffe://{principal}"


def _refuse_unknown(where: str, data: Mapping[str, Any], known: set[str]) -> None:
    unknown = set(data) - known
    if unknown:
        raise UntranslatableError(f"{where}: cannot translate {sorted(unknown)}")


def _path(path: str) -> dict[str, Any]:
    """Istio's path forms as Envoy's path matcher."""
    if path == "*":
        return {"any": True}
    if path.endswith("*"):
        return {"url_path": {"path": {"prefix": path[:-1]}}}
    if path.startswith("*"):
        return {"url_path": {"path": {"suffix": path[1:]}}}
    return {"url_path": {"path": {"exact": path}}}


def _permission(rule: Mapping[str, Any], where: str, ports: Mapping[int, int]) -> dict[str, Any]:
    operations = rule.get("to", [])
    if not operations:
        return {"any": True}
    alternatives = []
    for j, entry in enumerate(operations):
        _refuse_unknown(f"{where}.to[{j}]", entry, {"operation"})
        operation = entry["operation"]
        _refuse_unknown(f"{where}.to[{j}].operation", operation, {"paths", "ports"})
        parts = []
        if "paths" in operation:
            paths = [_path(p) for p in operation["paths"]]
            parts.append({"or_rules": {"rules": paths}})
        if "ports" in operation:
            numbers = [ports.get(int(p), int(p)) for p in operation["ports"]]
            parts.append({"or_rules": {"rules": [{"destination_port": n} for n in numbers]}})
        alternatives.append({"and_rules": {"rules": parts}} if parts else {"any": True})
    return alternatives[0] if len(alternatives) == 1 else {"or_rules": {"rules": alternatives}}


def _principals(rule: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    sources = rule.get("from", [])
    if not sources:
        return [{"any": True}]
    found = []
    for j, entry in enumerate(sources):
        _refuse_unknown(f"{where}.from[{j}]", entry, {"source"})
        source = entry["source"]
        _refuse_unknown(f"{where}.from[{j}].source", source, {"principals"})
        found += [
            {"authenticated": {"principal_name": {"exact": spiffe(p)}}}
            for p in source["principals"]
        ]
    return found


def rbac_filter(policy: Mapping[str, Any], ports: Mapping[int, int]) -> dict[str, Any]:
    """Envoy's RBAC filter for an AuthorizationPolicy (`action: ALLOW`); `ports` maps
    container ports to the listener ports that stand for them."""
    name = policy["metadata"]["name"]
    spec = policy["spec"]
    _refuse_unknown(f"AuthorizationPolicy/{name}", spec, {"selector", "action", "rules"})
    if spec.get("action", "ALLOW") != "ALLOW":
        raise UntranslatableError(f"AuthorizationPolicy/{name}: only ALLOW is translated")
    policies = {}
    for i, rule in enumerate(spec.get("rules", [])):
        where = f"AuthorizationPolicy/{name}.rules[{i}]"
        _refuse_unknown(where, rule, {"from", "to"})
        policies[f"{name}-{i}"] = {
            "permissions": [_permission(rule, where, ports)],
            "principals": _principals(rule, where),
        }
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {"@type": RBAC, "rules": {"action": "ALLOW", "policies": policies}},
    }


def _certificates(cert: Path, key: Path, ca: Path) -> dict[str, Any]:
    return {
        "tls_certificates": [
            {"certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}
        ],
        "validation_context": {"trusted_ca": {"filename": str(ca)}},
        "alpn_protocols": ["h2"],
    }


def _listener(name: str, manager: dict[str, Any], transport: dict[str, Any] | None) -> dict:
    chain: dict[str, Any] = {
        "filters": [
            {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}
        ]
    }
    if transport is not None:
        chain["transport_socket"] = transport
    return {"name": name, "address": LOOPBACK, "filter_chains": [chain]}


def _manager(prefix: str, cluster: str, filters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "@type": MANAGER,
        "stat_prefix": prefix,
        "codec_type": "AUTO",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": cluster,
                    "domains": ["*"],
                    "routes": [
                        {"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}
                    ],
                }
            ]
        },
        "http_filters": [*filters, ROUTER],
    }


def _cluster(
    name: str, port: int, transport: dict[str, Any] | None = None, http2: bool = True
) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    if http2:
        cluster["typed_extension_protocol_options"] = HTTP2_UPSTREAM
    if transport is not None:
        cluster["transport_socket"] = transport
    return cluster


def inbound_bootstrap(
    peer_authentication: Mapping[str, Any],
    authorization: Mapping[str, Any],
    workload_port: int,
    identity: tuple[Path, Path],
    ca: Path,
    listener_port: int = 0,
    container_port: int | None = None,
    http2: bool = True,
) -> dict[str, Any]:
    """A workload's inbound sidecar on `listener_port` (0: any), standing for the
    workload's `container_port`; the workload is spoken to over HTTP/2, or HTTP/1.1."""
    mode = peer_authentication["spec"]["mtls"]["mode"]
    if mode != "STRICT":
        raise UntranslatableError(f"PeerAuthentication mode {mode}: only STRICT is translated")
    tls = {
        "name": TLS,
        "typed_config": {
            "@type": DOWNSTREAM_TLS,
            "require_client_certificate": True,
            "common_tls_context": _certificates(*identity, ca),
        },
    }
    ports = {container_port: listener_port} if container_port is not None else {}
    manager = _manager("inbound", "workload", [rbac_filter(authorization, ports)])
    listener = _listener("inbound", manager, tls)
    listener["address"] = {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}}
    return {
        "admin": {"address": LOOPBACK},
        "static_resources": {
            "listeners": [listener],
            "clusters": [_cluster("workload", workload_port, http2=http2)],
        },
    }


def outbound_bootstrap(
    inbound_port: int, identity: tuple[Path, Path], ca: Path, callee: str
) -> dict[str, Any]:
    """The caller's sidecar, for calls to the workload whose principal is `callee`."""
    context = _certificates(*identity, ca)
    context["validation_context"]["match_typed_subject_alt_names"] = [
        {"san_type": "URI", "matcher": {"exact": spiffe(callee)}}
    ]
    tls = {
        "name": TLS,
        "typed_config": {
            "@type": UPSTREAM_TLS,
            "common_tls_context": context,
        },
    }
    return {
        "admin": {"address": LOOPBACK},
        "static_resources": {
            "listeners": [_listener("outbound", _manager("outbound", "mesh", []), None)],
            "clusters": [_cluster("mesh", inbound_port, tls)],
        },
    }
