"""`jitgate envoy config`: the Envoy bootstrap that puts one service behind jitgate (README "Protect a service
with Envoy"). The tests run Envoy on exactly what this prints.

The filter chain, in order:
- `header_mutation` drops any client-sent copy of the headers jitgate names the caller and the request with
  (`x-jitgate-request-id`, `x-jitgate-principal`): only ext_authz's answer may set them.
- `jwt_authn` verifies the Entra token (issuer, audience, signature by the tenant's keys, expiry) and forwards its
  payload in `x-jitgate-jwt-payload`; jwt_authn removes a client-sent copy of that header itself. No valid
  token: 401, before jitgate is asked.
- `ext_authz` asks jitgate (`/api/envoy/authz/<service>` + the request's path, same method), sending only that
  payload header; `failure_mode_allow: false`, so jitgate unreachable, slow or failing is a 403.
- `router` to the service.
Paths are normalised (dot segments, merged slashes) and an escaped slash is refused before any filter runs, so
jitgate and the service see the same path.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .domain.envoy import ENTRA_AUTHORITY, entra_issuer
from .envoy_authz import PATH_PREFIX, PAYLOAD_HEADER, PRINCIPAL_HEADER, REQUEST_ID_HEADER

DEFAULT_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"  # Debian's ca-certificates bundle


def _type(name: str) -> str:
    return f"type.googleapis.com/{name}"


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _cluster(name: str, host: str, port: int, tls: bool, ca_file: str, timeout: str = "1s") -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STRICT_DNS",
        "connect_timeout": timeout,
        "load_assignment": {"cluster_name": name, "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": _address(host, port)}}]}]},
    }
    if tls:
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": _type("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"),
            "sni": host,
            "common_tls_context": {"validation_context": {
                "trusted_ca": {"filename": ca_file},
                "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": host}}]}},
        }}
    return cluster


def _endpoint(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    tls = parts.scheme == "https"
    return parts.hostname, parts.port or (443 if tls else 80), tls


def envoy_config(service: str, audience: str, tenant: str, upstream: tuple[str, int], listen: tuple[str, int],
                 jitgate_url: str, admin: tuple[str, int], jwks_uri: str = "", ca_file: str = DEFAULT_CA_FILE,
                 check_timeout: str = "0.5s") -> dict[str, Any]:
    """The bootstrap (as a dict, to print as YAML) protecting `service` at `upstream`, listening on `listen`."""
    jwks = jwks_uri or f"{ENTRA_AUTHORITY}/{tenant}/discovery/v2.0/keys"
    jwks_host, jwks_port, jwks_tls = _endpoint(jwks)
    jitgate_host, jitgate_port, jitgate_tls = _endpoint(jitgate_url)
    base_path = urlsplit(jitgate_url).path.rstrip("/")
    filters = [
        {"name": "envoy.filters.http.header_mutation", "typed_config": {
            "@type": _type("envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"),
            "mutations": {"request_mutations": [{"remove": REQUEST_ID_HEADER}, {"remove": PRINCIPAL_HEADER}]}}},
        {"name": "envoy.filters.http.jwt_authn", "typed_config": {
            "@type": _type("envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"),
            "providers": {"entra": {
                "issuer": entra_issuer(tenant),
                "audiences": [audience],
                "require_expiration": True,
                "remote_jwks": {
                    "http_uri": {"uri": jwks, "cluster": "entra-jwks", "timeout": "5s"},
                    "cache_duration": "600s",
                    "async_fetch": {},
                },
                "forward": True,
                "forward_payload_header": PAYLOAD_HEADER,
            }},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "entra"}}],
        }},
        {"name": "envoy.filters.http.ext_authz", "typed_config": {
            "@type": _type("envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"),
            "failure_mode_allow": False,
            "status_on_error": {"code": "Forbidden"},
            "allowed_headers": {"patterns": [{"exact": PAYLOAD_HEADER}]},
            "http_service": {
                "server_uri": {"uri": jitgate_url, "cluster": "jitgate", "timeout": check_timeout},
                "path_prefix": f"{base_path}{PATH_PREFIX}/{service}",
                "authorization_response": {
                    "allowed_upstream_headers": {"patterns": [{"exact": REQUEST_ID_HEADER},
                                                              {"exact": PRINCIPAL_HEADER}]},
                    "allowed_client_headers": {"patterns": [{"exact": "content-type"}]},
                },
            },
        }},
        {"name": "envoy.filters.http.router", "typed_config": {
            "@type": _type("envoy.extensions.filters.http.router.v3.Router")}},
    ]
    manager = {
        "@type": _type("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"),
        "stat_prefix": service,
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "route_config": {"name": service, "virtual_hosts": [{
            "name": service, "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": f"{service}-upstream"}}]}]},
        "http_filters": filters,
    }
    return {
        "admin": {"address": _address(*admin)},
        "static_resources": {
            "listeners": [{
                "name": service,
                "address": _address(*listen),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}],
            }],
            "clusters": [
                _cluster(f"{service}-upstream", *upstream, tls=False, ca_file=ca_file),
                _cluster("jitgate", jitgate_host, jitgate_port, jitgate_tls, ca_file),
                _cluster("entra-jwks", jwks_host, jwks_port, jwks_tls, ca_file, timeout="5s"),
            ],
        },
    }


def host_port(text: str) -> tuple[str, int]:
    """`host:port` → (host, port); ValueError in words."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port")
    return host.strip("[]"), int(port)
