"""The database entities the Backstage module ships offer what the policy grants: every role an entity's
`jitgate.io/roles` lists is one a non-deny rule of policies/example.yaml gives at the entity's one scope (the rule
`Policy.explain` says decides), and every target is one jitgate's request model accepts. The annotations shape the
form and grant nothing; this keeps the form from offering what the policy would refuse.

That the catalog accepts the entities is checked by the module's own tests, with Backstage's validators
(`src/databases.test.ts`).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.domain.decision import Outcome
from shared.domain.policy import Policy
from shared.domain.request import parse_access_request

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "backstage" / "plugins" / "scaffolder-backend-module-jitgate" / "examples" / "databases.yaml"
POLICY = Policy.load(ROOT / "policies" / "example.yaml")
# A weekday at noon, inside any rule's window.
NOON = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def databases() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(EXAMPLES.read_text(encoding="utf-8")) if doc]


def listed(value: str) -> list[str]:
    """An annotation list as the module reads it (targets.ts listOf): commas or new lines, blanks dropped."""
    return list(dict.fromkeys(item.strip() for item in re.split(r"[,\n]", value) if item.strip()))


def target_of(entity: dict[str, Any]) -> tuple[str, str, list[str]]:
    annotations = entity["metadata"]["annotations"]
    [scope] = listed(annotations["jitgate.io/scopes"])
    return annotations["jitgate.io/provider"], scope, listed(annotations["jitgate.io/roles"])


def deciding_rule(policy: Policy, provider: str, scope: str, role: str) -> tuple[str, Outcome | None]:
    """The rule that decides a request for this target from someone in every group of the policy, and its outcome
    (None when no rule matches)."""
    request = parse_access_request(json.dumps({
        "schemaVersion": 1,
        "requestId": "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
        "requester": {"principalId": "dddddddd-0000-4000-8000-00000000000d", "displayName": "Jane"},
        "target": {"provider": provider, "scope": scope, "role": role},
        "duration": "PT30M",
        "justification": "Read the payments data for INC-4711",
        "ticket": "INC-4711",
    }))
    lines = policy.explain(request, frozenset(policy.groups), NOON)
    deciding = next((line for line in lines if "first match, this rule decides" in line), None)
    if deciding is None:
        return "no rule", None
    rule = next(r for r in policy.rules if deciding.startswith(f"{r.name}: "))
    return rule.name, rule.outcome


OFFERS = [(entity["metadata"]["name"], role) for entity in databases() for role in target_of(entity)[2]]


def test_the_examples_are_database_resources_each_naming_one_target() -> None:
    names = [entity["metadata"]["name"] for entity in databases()]
    assert len(names) == len(set(names)) >= 4
    for entity in databases():
        assert (entity["kind"], entity["spec"]["type"]) == ("Resource", "database")
        provider, _, roles = target_of(entity)
        assert provider in ("postgres", "azure-sql", "cosmos-data") and roles


@pytest.mark.parametrize(("name", "role"), OFFERS, ids=[f"{name}:{role}" for name, role in OFFERS])
def test_every_role_an_example_database_offers_is_one_the_policy_grants_there(name: str, role: str) -> None:
    [entity] = [e for e in databases() if e["metadata"]["name"] == name]
    provider, scope, _ = target_of(entity)
    rule, outcome = deciding_rule(POLICY, provider, scope, role)
    assert outcome in (Outcome.AUTO, Outcome.APPROVAL), f"{name} offers {role}, which {rule} decides: {outcome}"


def test_a_role_the_policy_does_not_grant_at_a_database_is_caught() -> None:
    # GIVEN the Azure flexible server's example, offering write as well (the policy grants it only on self-managed
    # payments servers), and a database the policy knows nothing of
    [azure] = [e for e in databases() if e["metadata"]["name"] == "payments-db-azure"]
    provider, scope, _ = target_of(azure)
    # THEN the check above would fail for both
    assert deciding_rule(POLICY, provider, scope, "payments_write") == ("no rule", None)
    assert deciding_rule(POLICY, "postgres", "orders-primary/orders", "payments_read") == ("no rule", None)
