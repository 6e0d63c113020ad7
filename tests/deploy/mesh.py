"""Envoy configuration generated from the Istio resources, so the mesh test runs the routing
the cluster would run, written once.

`envoy_bootstrap` translates a VirtualService and its DestinationRule the way istiod does
for a sidecar's outbound listener: one cluster per subset (`outbound|PORT|SUBSET|HOST`,
endpoints chosen by the subset's labels among the given pods) with the DestinationRule's
load balancer, connection pool (unlimited where unset, as Istio makes it) and outlier
detection (panic threshold at minHealthPercent, success-rate ejection off, as in Istio);
and per route the matches, weighted clusters, timeout (none unless set) and retry policy
(Istio's previous-hosts predicate and host reselection; Istio's default policy when the
route sets none). What it cannot translate it
refuses, so the test never runs a policy other than the one in istio/. `tls` is the one
field left out on purpose: mTLS is the sidecars' business, and the test runs on loopback."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
LB_POLICIES = {"ROUND_ROBIN": "ROUND_ROBIN", "LEAST_REQUEST": "LEAST_REQUEST", "RANDOM": "RANDOM"}
# Istio's retry policy for a route whose VirtualService sets no `retries`.
ISTIO_DEFAULT_RETRIES = {
    "attempts": 2,
    "retryOn": "connect-failure,refused-stream,unavailable,cancelled,503",
}
# Istio's circuit-breaker limits when the DestinationRule sets none (Envoy's own defaults,
# 3 concurrent retries among them, would fail requests that Istio retries).
ISTIO_UNLIMITED = 2**32 - 1
# Istio re-picks a host up to this many times so a retry avoids the hosts already tried.
HOST_SELECTION_RETRY_MAX_ATTEMPTS = 5
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class UntranslatableError(ValueError):
    """The resource uses a field this translation does not carry over."""


@dataclass(frozen=True)
class Pod:
    labels: Mapping[str, str]
    host: str
    port: int


def seconds(duration: str) -> str:
    """An Istio (Go) duration such as `1m30s` or `500ms` as Envoy's `<seconds>s`."""
    parts = _DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise UntranslatableError(f"not a duration: {duration!r}")
    total = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    return f"{total:g}s"


def _refuse_unknown(where: str, data: Mapping[str, Any], known: set[str]) -> None:
    unknown = set(data) - known
    if unknown:
        raise UntranslatableError(f"{where}: cannot translate {sorted(unknown)}")


def cluster_name(port: int, subset: str, host: str) -> str:
    return f"outbound|{port}|{subset}|{host}"


def _outlier_detection(policy: Mapping[str, Any]) -> dict[str, Any]:
    _refuse_unknown(
        "outlierDetection",
        policy,
        {
            "consecutive5xxErrors",
            "consecutiveGatewayErrors",
            "interval",
            "baseEjectionTime",
            "maxEjectionPercent",
            "minHealthPercent",
        },
    )
    envoy: dict[str, Any] = {"enforcing_success_rate": 0}
    if "consecutive5xxErrors" in policy:
        count = int(policy["consecutive5xxErrors"])
        envoy["consecutive_5xx"] = count
        envoy["enforcing_consecutive_5xx"] = 100 if count else 0
    else:
        envoy["enforcing_consecutive_5xx"] = 0
    if "consecutiveGatewayErrors" in policy:
        count = int(policy["consecutiveGatewayErrors"])
        envoy["consecutive_gateway_failure"] = count
        envoy["enforcing_consecutive_gateway_failure"] = 100 if count else 0
    for istio, key in (("interval", "interval"), ("baseEjectionTime", "base_ejection_time")):
        if istio in policy:
            envoy[key] = seconds(policy[istio])
    if "maxEjectionPercent" in policy:
        envoy["max_ejection_percent"] = int(policy["maxEjectionPercent"])
    return envoy


def _cluster(name: str, pods: Sequence[Pod], policy: Mapping[str, Any]) -> dict[str, Any]:
    _refuse_unknown(
        "trafficPolicy", policy, {"loadBalancer", "connectionPool", "outlierDetection", "tls"}
    )
    balancer = policy.get("loadBalancer", {})
    _refuse_unknown("loadBalancer", balancer, {"simple"})
    simple = balancer.get("simple", "LEAST_REQUEST")
    if simple not in LB_POLICIES:
        raise UntranslatableError(f"loadBalancer.simple {simple!r}")
    pool = policy.get("connectionPool", {})
    _refuse_unknown("connectionPool", pool, {"tcp", "http"})
    _refuse_unknown("connectionPool.tcp", pool.get("tcp", {}), {"connectTimeout", "maxConnections"})
    _refuse_unknown(
        "connectionPool.http",
        pool.get("http", {}),
        {"http1MaxPendingRequests", "http2MaxRequests", "maxRetries"},
    )
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": seconds(pool.get("tcp", {}).get("connectTimeout", "10s")),
        "lb_policy": LB_POLICIES[simple],
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": pod.host, "port_value": pod.port}
                                }
                            }
                        }
                        for pod in pods
                    ]
                }
            ],
        },
        "typed_extension_protocol_options": {
            HTTP_PROTOCOL_OPTIONS: {
                "@type": f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }
    http = pool.get("http", {})
    cluster["circuit_breakers"] = {
        "thresholds": [
            {
                "max_connections": int(pool.get("tcp", {}).get("maxConnections", ISTIO_UNLIMITED)),
                "max_pending_requests": int(http.get("http1MaxPendingRequests", ISTIO_UNLIMITED)),
                "max_requests": int(http.get("http2MaxRequests", ISTIO_UNLIMITED)),
                "max_retries": int(http.get("maxRetries", ISTIO_UNLIMITED)),
            }
        ]
    }
    if "outlierDetection" in policy:
        outlier = policy["outlierDetection"]
        cluster["outlier_detection"] = _outlier_detection(outlier)
        cluster["common_lb_config"] = {
            "healthy_panic_threshold": {"value": float(outlier.get("minHealthPercent", 0))}
        }
    return cluster


def _retry_policy(retries: Mapping[str, Any] | None) -> dict[str, Any] | None:
    retries = ISTIO_DEFAULT_RETRIES if retries is None else retries
    _refuse_unknown("retries", retries, {"attempts", "perTryTimeout", "retryOn"})
    if not retries.get("attempts"):
        return None
    conditions = [c.strip() for c in retries.get("retryOn", "").split(",") if c.strip()]
    codes = [int(c) for c in conditions if c.isdigit()]
    conditions = [c for c in conditions if not c.isdigit()]
    if codes:
        conditions.append("retriable-status-codes")
    policy: dict[str, Any] = {
        "retry_on": ",".join(conditions),
        "num_retries": int(retries["attempts"]),
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": HOST_SELECTION_RETRY_MAX_ATTEMPTS,
    }
    if codes:
        policy["retriable_status_codes"] = codes
    if "perTryTimeout" in retries:
        policy["per_try_timeout"] = seconds(retries["perTryTimeout"])
    return policy


def _string_match(where: str, match: Mapping[str, str]) -> dict[str, Any]:
    _refuse_unknown(where, match, {"exact", "prefix", "regex"})
    if "regex" in match:
        return {"safe_regex": {"regex": match["regex"]}}
    return dict(match)


def _route_matches(route: Mapping[str, Any], port: int) -> list[dict[str, Any]]:
    """Envoy's matches for a route, leaving out those for another port than the
    listener's (Istio matches `port` against the port the caller asked for)."""
    matches = []
    for match in route.get("match") or [{}]:
        _refuse_unknown("match", match, {"uri", "headers", "port"})
        if match.get("port", port) != port:
            continue
        envoy: dict[str, Any] = {"prefix": "/"}
        uri = match.get("uri")
        if uri:
            _refuse_unknown("match.uri", uri, {"exact", "prefix"})
            envoy = {"path": uri["exact"]} if "exact" in uri else {"prefix": uri["prefix"]}
        headers = match.get("headers") or {}
        if headers:
            envoy["headers"] = [
                {"name": name, "string_match": _string_match(f"headers.{name}", value)}
                for name, value in headers.items()
            ]
        matches.append(envoy)
    return matches


def _routes(virtual_service: Mapping[str, Any], port: int) -> list[dict[str, Any]]:
    routes = []
    for http in virtual_service["spec"].get("http") or []:
        _refuse_unknown("http", http, {"name", "match", "route", "timeout", "retries"})
        destinations = http["route"]
        clusters = []
        for destination in destinations:
            target = destination["destination"]
            target_port = target.get("port", {}).get("number", port)
            clusters.append(
                {
                    "name": cluster_name(target_port, target["subset"], target["host"]),
                    "weight": int(destination.get("weight", 100 if len(destinations) == 1 else 0)),
                }
            )
        action: dict[str, Any] = {
            "weighted_clusters": {"clusters": clusters},
            # Istio turns Envoy's 15 s default off: no timeout unless the route sets one.
            "timeout": seconds(http["timeout"]) if "timeout" in http else "0s",
        }
        retry = _retry_policy(http.get("retries"))
        if retry is not None:
            action["retry_policy"] = retry
        for number, match in enumerate(_route_matches(http, port)):
            name = f"{http.get('name', 'route')}-{number}"
            routes.append({"name": name, "match": match, "route": action})
    return routes


def envoy_bootstrap(
    virtual_service: Mapping[str, Any],
    destination_rule: Mapping[str, Any],
    pods: Sequence[Pod],
    port: int,
) -> dict[str, Any]:
    """An Envoy bootstrap listening on 127.0.0.1 (port picked by the kernel, see /listeners)
    that routes like a sidecar calling the VirtualService's host on `port`."""
    rule = destination_rule["spec"]
    policy = rule.get("trafficPolicy", {})
    clusters = []
    for subset in rule.get("subsets") or []:
        _refuse_unknown("subset", subset, {"name", "labels"})
        chosen = [p for p in pods if all(p.labels.get(k) == v for k, v in subset["labels"].items())]
        clusters.append(_cluster(cluster_name(port, subset["name"], rule["host"]), chosen, policy))
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "outbound",
        "codec_type": "AUTO",
        "route_config": {
            "name": "outbound",
            "virtual_hosts": [
                {"name": rule["host"], "domains": ["*"], "routes": _routes(virtual_service, port)}
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    loopback = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
    return {
        "admin": {"address": loopback},
        "static_resources": {
            "listeners": [
                {
                    "name": "outbound",
                    "address": loopback,
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": manager,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": clusters,
        },
    }
