"""Access through Envoy, the pure part (shared/domain/envoy.py): whose token, which path, which grant decides."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.adapters.store_format import INSTANT_FORMAT, parse_instant
from shared.domain.envoy import (
    AccessIndex,
    Route,
    Unauthenticated,
    caller_from_payload,
    entra_issuer,
    path_segments,
)
from shared.domain.ledger import GrantKey, Hold, HoldStatus
from shared.domain.request import Provider, validate_role, validate_scope
from shared.settings import Settings, SettingsError

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ISSUER = entra_issuer(TENANT)
AUDIENCE = "api://payments"
JANE = "dddddddd-0000-4000-8000-00000000000d"
NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def claims(**changes: Any) -> dict[str, Any]:
    base = {"iss": ISSUER, "aud": AUDIENCE, "tid": TENANT, "oid": JANE, "preferred_username": "jane@contoso.com",
            "exp": int((NOW + timedelta(hours=1)).timestamp())}
    return {k: v for k, v in (base | changes).items() if v is not None}


def encoded(doc: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def test_the_caller_is_the_tokens_object_id() -> None:
    caller = caller_from_payload(encoded(claims(oid=JANE.upper())), ISSUER, AUDIENCE, NOW)
    assert (caller.principal_id, caller.tenant_id, caller.username) == (JANE, TENANT, "jane@contoso.com")


def test_an_audience_list_naming_the_service_is_accepted() -> None:
    assert caller_from_payload(encoded(claims(aud=["other", AUDIENCE])), ISSUER, AUDIENCE, NOW).principal_id == JANE


@pytest.mark.parametrize(("payload", "reason"), [
    (None, "no verified token"),
    ("", "no verified token"),
    ("%%%", "not base64url JSON"),
    (encoded([1, 2]), "not a JSON object"),
    (encoded(claims(iss="https://login.microsoftonline.com/common/v2.0")), "issued by someone else"),
    (encoded(claims(iss=f"https://sts.windows.net/{TENANT}/")), "issued by someone else"),
    (encoded(claims(aud="api://orders")), "another application"),
    (encoded(claims(exp=None)), "no expiry"),
    (encoded(claims(exp=True)), "no expiry"),
    (encoded(claims(exp=1e300)), "no time"),
    (encoded(claims(exp=-1e300)), "no time"),
    (encoded(claims(exp=int((NOW - timedelta(seconds=61)).timestamp()))), "expired"),
    (encoded(claims(oid=None)), "no Entra object id"),
    (encoded(claims(oid="00000000-0000-0000-0000-000000000000")), "no Entra object id"),
    (encoded(claims(tid="11111111-1111-4111-8111-111111111111")), "tenant"),
])
def test_a_payload_this_deployment_does_not_trust_names_nobody(payload: str | None, reason: str) -> None:
    with pytest.raises(Unauthenticated, match=reason):
        caller_from_payload(payload, ISSUER, AUDIENCE, NOW)


@pytest.mark.parametrize(("path", "segments"), [
    ("/", ()),
    ("/invoices", ("invoices",)),
    ("/invoices/", ("invoices",)),
    ("/invoices/42/lines", ("invoices", "42", "lines")),
])
def test_canonical_paths_are_segments(path: str, segments: tuple[str, ...]) -> None:
    assert path_segments(path) == segments


@pytest.mark.parametrize("path", [
    "invoices", "/invoices/../admin", "/./admin", "/invoices//admin", "/invoices%2F..%2Fadmin", "/invoices%2fx",
    "/%2e%2e/admin", "/invoices\\admin", "/invoices/%5cadmin", "/a/..",
])
def test_a_path_that_could_mean_another_is_refused(path: str) -> None:
    assert path_segments(path) is None


def test_a_route_covers_its_prefix_segment_by_segment() -> None:
    route = Route.of_scope("payments-api/invoices/v1")
    assert route.covers("payments-api", ("invoices", "v1"))
    assert route.covers("payments-api", ("invoices", "v1", "42"))
    assert not route.covers("payments-api", ("invoices", "v10"))
    assert not route.covers("payments-api", ("invoices",))
    assert not route.covers("orders-api", ("invoices", "v1"))
    assert Route.of_scope("payments-api").covers("payments-api", ())


def hold(scope: str = "payments-api/invoices", role: str = "read", expires_in: float = 3600,
         principal: str = JANE, request_id: str = "r1", status: HoldStatus = HoldStatus.ACTIVE) -> Hold:
    key = GrantKey.of("envoy", principal, role, scope)
    made = Hold.for_key(key, request_id, NOW - timedelta(minutes=1), NOW + timedelta(seconds=expires_in), False,
                        "User")
    return made.model_copy(update={"status": status})


def test_read_opens_get_head_options_and_write_the_rest_too() -> None:
    read = AccessIndex([hold(role="read")])
    write = AccessIndex([hold(role="write")])
    for method in ("GET", "HEAD", "OPTIONS"):
        assert read.decide(JANE, "payments-api", method, ("invoices",), NOW).allowed
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        denied = read.decide(JANE, "payments-api", method, ("invoices",), NOW)
        assert not denied.allowed and denied.entry is not None and method in denied.reason
        assert write.decide(JANE, "payments-api", method, ("invoices", "42"), NOW).allowed
    assert not write.decide(JANE, "payments-api", "TRACE", ("invoices",), NOW).allowed


def test_access_ends_at_expires_at_whatever_the_ledger_still_says() -> None:
    index = AccessIndex([hold(expires_in=10)])
    assert index.decide(JANE, "payments-api", "GET", ("invoices",), NOW + timedelta(seconds=9.999)).allowed
    ended = index.decide(JANE, "payments-api", "GET", ("invoices",), NOW + timedelta(seconds=10))
    assert not ended.allowed and "expired" in ended.reason and ended.entry is not None


def test_only_active_envoy_holds_of_the_caller_open_anything() -> None:
    index = AccessIndex([
        hold(status=HoldStatus.RELEASED),
        hold(principal="aaaaaaaa-0000-4000-8000-00000000000a"),
        Hold.for_key(GrantKey.of("local", JANE, "read", "payments-api"), "r2", NOW, NOW + timedelta(hours=1), False,
                     "User"),
    ])
    refused = index.decide(JANE, "payments-api", "GET", ("invoices",), NOW)
    assert not refused.allowed and refused.entry is None and "no grant on payments-api" in refused.reason


def test_a_path_outside_the_grant_is_refused_and_counted_against_it() -> None:
    index = AccessIndex([hold(scope="payments-api/invoices")])
    refused = index.decide(JANE, "payments-api", "GET", ("admin",), NOW)
    assert not refused.allowed and refused.entry is not None and "/invoices" in refused.reason
    assert not index.decide(JANE, "payments-api", "GET", None, NOW).allowed


def test_one_of_several_grants_is_enough() -> None:
    index = AccessIndex([hold(scope="payments-api/invoices", request_id="r1"),
                         hold(scope="payments-api/admin", role="write", request_id="r2", expires_in=60)])
    allowed = index.decide(JANE, "payments-api", "POST", ("admin", "x"), NOW)
    assert allowed.allowed and allowed.entry is not None and allowed.entry.request_id == "r2"


@pytest.mark.parametrize("scope", ["payments-api", "payments-api/invoices", "payments-api/v1/invoices.json",
                                   "a/~b/c-d_e"])
def test_envoy_scopes_are_a_service_and_a_route_prefix(scope: str) -> None:
    assert validate_scope(Provider.ENVOY, scope) == scope


@pytest.mark.parametrize("scope", ["/payments-api", "payments-api/", "Payments-api", "payments-api/*",
                                   "payments-api/../admin", "payments-api//x", "payments-api/%2e", "payments-api/a b",
                                   "-payments", "payments-api/./x"])
def test_anything_else_is_no_envoy_scope(scope: str) -> None:
    with pytest.raises(ValueError, match="envoy scope"):
        validate_scope(Provider.ENVOY, scope)


def test_envoy_roles_are_read_and_write() -> None:
    assert [validate_role(Provider.ENVOY, r) for r in ("read", "write")] == ["read", "write"]
    for role in ("Reader", "admin", "READ"):
        with pytest.raises(ValueError, match="read"):
            validate_role(Provider.ENVOY, role)


@pytest.mark.parametrize("text", ["2026-12-06T09:00:00.000000Z", "2026-02-28T23:59:59.999999Z",
                                  "1999-01-01T00:00:00.500000Z"])
def test_stored_instants_read_fast_read_the_same(text: str) -> None:
    # NB. Envoy's index reads every active hold each refresh; the store's instants are parsed without strptime.
    assert parse_instant(text) == datetime.strptime(text, INSTANT_FORMAT).replace(tzinfo=UTC)


@pytest.mark.parametrize("text", ["2026-12-06T09:00:00Z", "2026-12-06 09:00:00.000000Z", "2026-13-06T09:00:00.000000Z",
                                  "2026-12-06T09:00:00.000000+00:00", "2026-12-06T09:00:00.000000"])
def test_anything_else_is_no_stored_instant(text: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(text)


def test_envoy_settings_are_read_and_checked_by_name() -> None:
    settings = Settings.from_env({"JITGATE_ENVOY_SERVICES": "payments-api=api://payments, orders-api=6e8d1f4a",
                                  "JITGATE_ENVOY_TENANT": TENANT.upper(), "JITGATE_ENVOY_REFRESH_SECONDS": "0.5"})
    assert settings.envoy_services == {"payments-api": "api://payments", "orders-api": "6e8d1f4a"}
    assert (settings.envoy_tenant, settings.envoy_refresh) == (TENANT, timedelta(seconds=0.5))
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"JITGATE_ENVOY_SERVICES": "Payments=x,payments-api/admin=y",
                           "JITGATE_ENVOY_REFRESH_SECONDS": "0"})
    problems = "\n".join(refused.value.problems)
    assert "'Payments' is not a service name" in problems
    assert "JITGATE_ENVOY_REFRESH_SECONDS" in problems
    with pytest.raises(SettingsError, match="needs JITGATE_ENVOY_TENANT"):
        Settings.from_env({"JITGATE_ENVOY_SERVICES": "payments-api=x"})
    with pytest.raises(SettingsError, match="tenant id"):
        Settings.from_env({"JITGATE_ENVOY_SERVICES": "payments-api=x", "JITGATE_ENVOY_TENANT": "contoso"})
