"""The databases part of infra/ (infra/README.md "Databases"): both templates give the same access to the same
existing servers and accounts, create none of them, and give the function identity no more than the providers use.

Nothing here talks to Azure: the templates are parsed (tests/infra/templates.py), and the `cosmos-data` provider
runs against the fake ARM (tests/azure/fake_arm_cosmos.py) to list every call it makes.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from shared.adapters.azure.cosmos_data import CosmosDataGrants
from shared.domain.ledger import GrantKey, marker_for
from tests.azure import fake_arm
from tests.azure.fake_arm import FakeArm
from tests.azure.fake_arm_cosmos import DATA_READER
from tests.azure.fake_http import Call

from . import templates
from .templates import Inventory, bicep_inventory, terraform_inventory

IDENTITY = "${Microsoft.ManagedIdentity/userAssignedIdentities:id-${param:name}}"
DATA_GRANTS = "jitgate ${param:name} Cosmos DB data-plane grants"
OPERATION_STATUS = "jitgate ${param:name} Cosmos DB operation status"
WHEN_THE_POLICY_ASSIGNS_COSMOS_ROLES = ["cosmosData", "cosmosaccountids"]


@pytest.fixture(scope="module")
def bicep() -> Inventory:
    return bicep_inventory()


@pytest.fixture(scope="module")
def terraform() -> Inventory:
    return terraform_inventory()


def test_both_templates_give_the_same_database_access(bicep: Inventory, terraform: Inventory) -> None:
    assert bicep.custom_roles == terraform.custom_roles
    assert bicep.database_assignments == terraform.database_assignments
    assert bicep.entra_admins == terraform.entra_admins


def test_no_database_server_or_account_is_created(bicep: Inventory, terraform: Inventory) -> None:
    # The servers and accounts are the deployment's parameters, existing resources it points at; the only
    # Cosmos DB account it deploys is jitgate's own store.
    for inventory in (bicep, terraform):
        assert not {"Microsoft.DBforPostgreSQL/flexibleServers", "Microsoft.Sql/servers"} & inventory.kinds
    main = (templates.BICEP / "main.bicep").read_text(encoding="utf-8")
    assert "Microsoft.DocumentDB/databaseAccounts@" not in main
    for name in ("postgres-entra-admin.bicep", "sql-entra-admin.bicep", "cosmos-data-grant.bicep"):
        module = templates.bicep_file(name)
        # A server or account a module names is declared `existing`: read, never deployed.
        servers = [s for s, kind, _, _ in module.resources()
                   if kind.count("/") == 1 and not kind.startswith("Microsoft.Authorization/")]
        assert all(module.tree["resources"][s]["existing"] for s in servers), name


def test_the_cosmos_data_role_allows_data_plane_role_assignments_and_nothing_else(bicep: Inventory) -> None:
    role = bicep.custom_roles[DATA_GRANTS]
    assert role["actions"] == [
        "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments/*",
        "Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions/read",
        "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/read",
        "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/read",
    ]
    assert role["not actions"] == [] and role["type"] == "CustomRole"
    assert bicep.custom_roles[OPERATION_STATUS]["actions"] == ["Microsoft.DocumentDB/locations/operationsStatus/read"]
    # Both exist only when the policy lets cosmos-data assign a role and accounts are given (as the RBAC grant
    # permission exists only when the policy allows an Azure role).
    for name in (DATA_GRANTS, OPERATION_STATUS):
        assert bicep.custom_roles[name]["when"] == WHEN_THE_POLICY_ASSIGNS_COSMOS_ROLES
        assert bicep.custom_roles[name]["assignable at"] == ["cosmosaccountids"]


def test_the_cosmos_data_role_is_assigned_at_each_account_and_nowhere_wider(bicep: Inventory) -> None:
    assert sorted(bicep.database_assignments, key=lambda a: a["role"]) == [
        {"role": DATA_GRANTS, "over": "each Cosmos DB account", "at": "Microsoft.DocumentDB/databaseAccounts",
         "when": WHEN_THE_POLICY_ASSIGNS_COSMOS_ROLES, "principal": IDENTITY, "principal type": "ServicePrincipal"},
        {"role": OPERATION_STATUS, "over": "each resource group holding a Cosmos DB account", "at": "resource group",
         "when": WHEN_THE_POLICY_ASSIGNS_COSMOS_ROLES, "principal": IDENTITY, "principal type": "ServicePrincipal"},
    ]


def test_a_group_is_made_entra_administrator_only_when_one_is_given(bicep: Inventory) -> None:
    postgres = bicep.entra_admins["Microsoft.DBforPostgreSQL/flexibleServers/administrators"]
    sql = bicep.entra_admins["Microsoft.Sql/servers/administrators"]
    assert (postgres["over"], sql["over"]) == ("each PostgreSQL server", "each Azure SQL server")
    assert postgres["when"] == sql["when"] == ["databaseadmingroup"]
    # The group named by the parameter, never the function identity.
    assert postgres["properties"] == {"principalName": ["databaseadmingroup"], "principalType": "Group",
                                      "tenantId": []}
    assert sql["properties"] == {"administratorType": "ActiveDirectory", "login": ["databaseadmingroup"],
                                 "sid": ["databaseadmingroup"], "tenantId": []}


def test_the_app_is_told_the_databases_it_was_pointed_at(bicep: Inventory) -> None:
    settings = bicep.app_settings
    assert settings["JITGATE_PROVIDERS"] == (
        "computed from cosmosaccountids, databasesfile, postgresserverids, sqlserverids")
    assert settings["JITGATE_COSMOS_ACCOUNTS"] == "computed from cosmosaccountids"
    assert settings["JITGATE_DATABASES_FILE"] == "${param:databasesfile}"
    jitgate = (templates.BICEP / "modules" / "jitgate.bicep").read_text(encoding="utf-8")
    databases = (templates.TERRAFORM / "main.tf").read_text(encoding="utf-8")
    for provider in ("postgres", "azure-sql", "cosmos-data"):
        assert f"'{provider}'" in jitgate and f'"{provider}"' in databases


IDS = {
    "postgres_server_ids": "/subscriptions/3d6a4adc-4ac3-43f4-a05a-2238e5eec649/resourceGroups/rg-pay/providers/"
                           "Microsoft.DBforPostgreSQL/flexibleServers/pg-payments",
    "sql_server_ids": "/subscriptions/3d6a4adc-4ac3-43f4-a05a-2238e5eec649/resourceGroups/rg-pay/providers/"
                      "Microsoft.Sql/servers/sql-payments",
    "cosmos_account_ids": "/subscriptions/3d6a4adc-4ac3-43f4-a05a-2238e5eec649/resourceGroups/rg-pay/providers/"
                          "Microsoft.DocumentDB/databaseAccounts/cosmos-payments",
}


@pytest.mark.parametrize("variable", sorted(IDS))
def test_terraform_refuses_an_id_of_another_kind(variable: str) -> None:
    [validation] = templates.terraform_tree()["variable"][variable]["validation"]
    condition = validation["condition"]
    pattern = re.search(r'regex\("(.+)", id\)', condition)
    assert pattern is not None, condition
    regex = re.compile(pattern[1].replace("\\\\", "\\").replace("(?i)", ""), re.IGNORECASE)
    assert regex.search(IDS[variable])
    for other in set(IDS.values()) - {IDS[variable]}:
        assert not regex.search(other), other
    assert not regex.search(IDS[variable] + "/databases/payments")


def test_bicep_stops_on_an_id_of_another_kind() -> None:
    check = templates.bicep_file("check-database-ids.bicep").tree["parameters"]
    assert set(check) == {"malformedPostgresServerIds", "malformedSqlServerIds", "malformedCosmosAccountIds",
                          "incompleteDatabaseAdminGroup"}
    for name, parameter in check.items():
        assert {"type": "max_length", "argument": 0} in parameter["decorators"], name
    main = (templates.BICEP / "main.bicep").read_text(encoding="utf-8")
    for variable, namespace in (("postgresServers", "microsoft.dbforpostgresql/flexibleservers"),
                                ("sqlServers", "microsoft.sql/servers"),
                                ("cosmosAccounts", "microsoft.documentdb/databaseaccounts")):
        assert re.search(rf"var {variable} = filter\(\w+, id => length\(split\(id, '/'\)\) == 9 .*'/providers/"
                         rf"{re.escape(namespace)}/'\)\)", main), variable


# ---------------------------------------------------------------- the role against what the provider does

SUB = "/subscriptions/11111111-1111-4111-8111-111111111111"
ACCOUNT = f"{SUB}/resourceGroups/rg-payments-prod/providers/Microsoft.DocumentDB/databaseAccounts/cosmos-payments"
_ACCOUNT_PATH = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.DocumentDB"
                           r"/databaseAccounts/[^/]+(?P<rest>/.*)?$", re.IGNORECASE)
_OPERATION_STATUS = re.compile(r"^/subscriptions/[^/]+/providers/Microsoft\.DocumentDB/locations/[^/]+"
                               r"/operationsStatus/[^/]+$", re.IGNORECASE)
_VERBS = {"GET": "read", "PUT": "write", "DELETE": "delete"}


def required(call: Call) -> tuple[str, str]:
    """The Azure RBAC action a call to ARM needs, and where a role must be assigned for it: at the account for
    anything below the account; at the resource group for an operation's status, whose URL is not below the
    account (Azure Resource Manager's "Track asynchronous Azure operations")."""
    path = re.sub(r"^/t/[^/]+", "", call.path)  # the fake ARM's tenant prefix
    if _OPERATION_STATUS.match(path):
        return "Microsoft.DocumentDB/locations/operationsStatus/read", "resource group"
    found = _ACCOUNT_PATH.match(path)
    assert found is not None and found["rest"], call.path
    types = [part for index, part in enumerate(found["rest"].strip("/").split("/")) if index % 2 == 0]
    return f"Microsoft.DocumentDB/databaseAccounts/{'/'.join(types)}/{_VERBS[call.method]}", (
        "Microsoft.DocumentDB/databaseAccounts")


def allows(actions: list[str], action: str) -> bool:
    """Azure's matching of a role's actions: case-insensitive, `*` standing for any rest."""
    return any(re.fullmatch(re.escape(granted).replace(r"\*", ".*"), action, re.IGNORECASE) for granted in actions)


@pytest.fixture
def arm() -> Iterator[FakeArm]:
    server = FakeArm()
    yield server
    server.close()


def provider_calls(arm: FakeArm) -> list[Call]:
    """Every ARM call the provider makes to grant by role name at a container, revoke, and reconcile."""
    tenant, url = arm.new_tenant()
    arm.seed_cosmos_account(tenant.cosmos, ACCOUNT)
    arm.seed_cosmos_database(tenant.cosmos, ACCOUNT, "Payments", ("Ledger",))
    tenant.cosmos.polls = 1
    provider = CosmosDataGrants(lambda: fake_arm.TOKEN, url, accounts=[ACCOUNT], poll_interval=0.0)
    try:
        scope = f"{ACCOUNT}/dbs/payments/colls/ledger"
        role = provider.resolve_role(scope, "Cosmos DB Built-in Data Reader")
        assert role == DATA_READER
        key = GrantKey.of("cosmos-data", str(uuid.uuid4()), role, scope)
        provider.create_assignment(key, key.assignment_name(), marker_for(str(uuid.uuid4())))
        assert provider.list_marked()
        provider.delete_assignment(key.scope, key.assignment_name())
    finally:
        provider.close()
    return list(arm.calls)


def test_the_cosmos_data_roles_allow_every_call_the_provider_makes_and_need_each_action(
        arm: FakeArm, bicep: Inventory) -> None:
    # GIVEN each custom role's actions, by where it is assigned
    granted: dict[str, list[str]] = {}
    for assignment in bicep.database_assignments:
        granted.setdefault(assignment["at"], []).extend(bicep.custom_roles[assignment["role"]]["actions"])

    # WHEN the provider grants, reconciles and revokes
    needed = {required(call) for call in provider_calls(arm)}

    # THEN each call is allowed by a role assigned where the call is authorized
    for action, where in sorted(needed):
        assert allows(granted[where], action), (action, where)
    # AND each action a role holds is one some call needs
    for where, actions in granted.items():
        for action in actions:
            assert any(allows([action], n) for n, w in needed if w == where), (action, where)


def test_the_assignment_description_names_the_roles_the_policy_allows() -> None:
    # The permission cannot be conditioned on them (infra/README.md), so the portal at least says which they are.
    main = (templates.BICEP / "main.bicep").read_text(encoding="utf-8")
    databases = (templates.TERRAFORM / "databases.tf").read_text(encoding="utf-8")
    assert "join(allowedRoles.cosmosData.roleDefinitionIds, ', ')" in main
    assert 'join(", ", local.allowed_roles.cosmosData.roleDefinitionIds)' in databases
