"""gcp-iam against Google itself. Run only with JITGATE_LIVE_GCP=1, JITGATE_LIVE_GCP_PROJECT (a project id where the
caller may change the allow policy) and JITGATE_LIVE_GCP_MEMBER (`user:` or `serviceAccount:` to grant
roles/browser to, for five minutes); skipped otherwise. The identity is Application Default Credentials. Not marked
`gcp`: CI has no Google project, and these tests say so by skipping."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters.gcp.iam import GcpIam, iam_role_id
from shared.adapters.gcp.rest import GoogleToken
from shared.domain.ledger import GrantKey, marker_for

PROJECT = os.environ.get("JITGATE_LIVE_GCP_PROJECT", "")
MEMBER = os.environ.get("JITGATE_LIVE_GCP_MEMBER", "")

pytestmark = pytest.mark.skipif(
    not (os.environ.get("JITGATE_LIVE_GCP") == "1" and PROJECT and MEMBER),
    reason="live Google Cloud test: set JITGATE_LIVE_GCP=1, JITGATE_LIVE_GCP_PROJECT and JITGATE_LIVE_GCP_MEMBER",
)


def test_a_conditional_binding_is_granted_read_back_and_removed_on_google() -> None:
    scope = f"projects/{PROJECT}"
    provider = GcpIam(GoogleToken(), target_scopes=(scope,))
    key = GrantKey.of("gcp-iam", MEMBER, iam_role_id(provider.resolve_role(scope, "roles/browser")), scope)
    try:
        created = provider.create_assignment(key, key.assignment_name(), marker_for("live-test"), "User",
                                             datetime.now(UTC) + timedelta(minutes=5))
        assert provider.find_assignment(key) == created
        assert created in provider.list_marked()
    finally:
        provider.delete_assignment(scope, key.assignment_name())
    assert provider.get_assignment(scope, key.assignment_name()) is None
