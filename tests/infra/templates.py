"""Reads infra/bicep (pycep-parser) and infra/terraform (python-hcl2) into one comparable inventory.

Each template is reduced to the facts that must agree, written in one canonical form:

- a literal stays itself; a parameter / variable is `${param:<name>}` (no case, no underscores);
- a variable, local or `allowed-roles.json` field is replaced by its value (`allowed-roles.json:<field>`
  for the file both templates load);
- a reference to a resource is `${<ARM type>:<canonical name>}`, whatever attribute is read from it;
- a Key Vault reference is `@Microsoft.KeyVault(<secret name>)`.

So `identity.properties.clientId` (Bicep) and `azurerm_user_assigned_identity.this.client_id` (Terraform)
both read `${Microsoft.ManagedIdentity/userAssignedIdentities:id-${param:name}}`. What is only known at
deployment time (function calls such as guid() or uniqueString()) stays opaque text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BICEP = INFRA / "bicep"
TERRAFORM = INFRA / "terraform"
ALLOWED_ROLES = "allowed-roles.json"

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
GRANT_SCOPE = "<each grant scope>"

# Terraform resource type -> the ARM type it manages (azapi resources name theirs in `type`).
TERRAFORM_TO_ARM = {
    "azurerm_resource_group": "Microsoft.Resources/resourceGroups",
    "azurerm_user_assigned_identity": "Microsoft.ManagedIdentity/userAssignedIdentities",
    "azurerm_log_analytics_workspace": "Microsoft.OperationalInsights/workspaces",
    "azurerm_application_insights": "Microsoft.Insights/components",
    "azurerm_monitor_action_group": "Microsoft.Insights/actionGroups",
    "azurerm_monitor_metric_alert": "Microsoft.Insights/metricAlerts",
    "azurerm_monitor_diagnostic_setting": "Microsoft.Insights/diagnosticSettings",
    "azurerm_storage_account": "Microsoft.Storage/storageAccounts",
    "azurerm_storage_container": "Microsoft.Storage/storageAccounts/blobServices/containers",
    "azurerm_storage_container_immutability_policy":
        "Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies",
    "azurerm_servicebus_namespace": "Microsoft.ServiceBus/namespaces",
    "azurerm_servicebus_queue": "Microsoft.ServiceBus/namespaces/queues",
    "azurerm_cosmosdb_account": "Microsoft.DocumentDB/databaseAccounts",
    "azurerm_cosmosdb_sql_database": "Microsoft.DocumentDB/databaseAccounts/sqlDatabases",
    "azurerm_cosmosdb_sql_container": "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers",
    "azurerm_cosmosdb_sql_role_assignment": "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments",
    "azurerm_key_vault": "Microsoft.KeyVault/vaults",
    "azurerm_service_plan": "Microsoft.Web/serverfarms",
    "azurerm_function_app_flex_consumption": "Microsoft.Web/sites",
    "azurerm_role_assignment": "Microsoft.Authorization/roleAssignments",
    "azurerm_role_definition": "Microsoft.Authorization/roleDefinitions",
}

# What each database loop of either template runs over, by the variable (Bicep) or expression (Terraform) it
# iterates: the same words on both sides, so that the inventories compare.
BICEP_DATABASE_LOOPS = {
    "postgresServers": "each PostgreSQL server",
    "sqlServers": "each Azure SQL server",
    "cosmosAccounts": "each Cosmos DB account",
    "cosmosResourceGroups": "each resource group holding a Cosmos DB account",
}
TERRAFORM_DATABASE_LOOPS = {
    "var.postgres_server_ids": "each PostgreSQL server",
    "var.sql_server_ids": "each Azure SQL server",
    "var.cosmos_account_ids": "each Cosmos DB account",
    "local.cosmos_resource_groups": "each resource group holding a Cosmos DB account",
}

# ARM child resources Bicep declares on their own and azurerm sets through an argument of the parent.
BICEP_ONLY_KINDS = {
    "Microsoft.Storage/storageAccounts/blobServices": "azurerm_storage_account.blob_properties",
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies":
        "azurerm_function_app_flex_consumption.webdeploy_publish_basic_authentication_enabled",
}

# Bicep queue property -> Terraform argument, where the one is not simply the snake_case of the other.
QUEUE_ARGUMENTS = {"defaultMessageTimeToLive": "default_message_ttl"}

_KEY_VAULT_REFERENCE = re.compile(
    r"^@Microsoft\.KeyVault\(SecretUri=.*\$\{Microsoft\.KeyVault/vaults/secrets:([^}]+)\}.*\)$"
)
_INTERPOLATION = re.compile(r"\$\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def plain(name: str) -> str:
    """A parameter or output name as both tools agree on it: no case, no underscores."""
    return name.replace("_", "").lower()


def text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def guids(value: Any) -> list[str]:
    return GUID.findall(text(value))


def computed(parameters: Any) -> str:
    """A value a function computes at deployment time, known by the parameters it is computed from."""
    return "computed from " + ", ".join(sorted(set(parameters)))


def key_vault_reference(value: Any) -> Any:
    if isinstance(value, str) and (found := _KEY_VAULT_REFERENCE.match(value)):
        return f"@Microsoft.KeyVault({found.group(1)})"
    return value


@dataclass
class Inventory:
    """What one template deploys, in the canonical form both templates share."""

    kinds: set[str] = field(default_factory=set)
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    cosmos_database: Any = None
    cosmos_containers: dict[str, str] = field(default_factory=dict)
    cosmos_data_roles: list[tuple[str, str, str]] = field(default_factory=list)
    # The databases part: custom roles by name, their assignments, the Entra administrators of existing servers.
    custom_roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    database_assignments: list[dict[str, Any]] = field(default_factory=list)
    entra_admins: dict[str, dict[str, Any]] = field(default_factory=dict)
    role_assignments: set[tuple[str, str, str, str]] = field(default_factory=set)
    grants: list[dict[str, Any]] = field(default_factory=list)
    app_settings: dict[str, Any] = field(default_factory=dict)
    activity_log_categories: set[str] = field(default_factory=set)
    activity_log_subscriptions: str = ""
    alert: dict[str, Any] = field(default_factory=dict)
    authentication: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    parameters: set[str] = field(default_factory=set)
    outputs: set[str] = field(default_factory=set)


# ---------------------------------------------------------------- Bicep


@dataclass
class BicepFile:
    """One parsed .bicep file; `arguments` are the values its caller (main.bicep) passes as parameters."""

    path: Path
    tree: dict[str, Any]
    arguments: dict[str, Any] = field(default_factory=dict)
    caller: BicepFile | None = None

    @property
    def variables(self) -> dict[str, Any]:
        return {name: var["value"] for name, var in self.tree.get("variables", {}).items()}

    def resources(self) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any] | None]]:
        """(symbol, ARM type, body, loop) for each resource."""
        for symbol, resource in self.tree.get("resources", {}).items():
            config = resource["config"]
            loop = config.get("loop_type")
            wrapped = loop is not None or "condition" in config
            yield symbol, resource["type"], (config["config"] if wrapped else config), loop

    def condition(self, symbol: str) -> Any:
        """The `if (...)` of a conditional resource, None for one that is always deployed."""
        return self.tree["resources"][symbol]["config"].get("condition")

    def references(self, value: Any) -> list[str]:
        """The parameters (by their plain name) and allowed-roles.json fields an expression reads."""
        canonical = text(self.canon(value))
        found = re.findall(r"\$\{param:(\w+)\}", canonical)
        found += re.findall(rf"{re.escape(ALLOWED_ROLES)}:(\w+)", canonical)
        return sorted(set(found))

    def resource(self, symbol: str) -> dict[str, Any]:
        return next(body for s, _, body, _ in self.resources() if s == symbol)

    def canon(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.canon(v) for v in value]
        if isinstance(value, str):
            return self._name(value) if value in self._names() else self._interpolate(value)
        if not isinstance(value, dict):
            return value
        operator = value.get("operator")
        if isinstance(operator, dict) and operator.get("type") == "property_accessor":
            return self._access(operator["operands"])
        function = value.get("function")
        if isinstance(function, dict) and function.get("type") == "string":
            return str(self.canon(function["parameters"]["value_to_convert"]))
        if isinstance(function, dict) and function.get("type") == "load_json_content":
            return ALLOWED_ROLES if function["parameters"]["file_path"].endswith(ALLOWED_ROLES) else text(value)
        return {k: self.canon(v) for k, v in value.items()}

    def _names(self) -> set[str]:
        return (
            set(self.variables) | set(self.tree.get("parameters", {})) | set(self.tree.get("resources", {}))
            | set(self.tree.get("modules", {}))
        )

    def _name(self, name: str) -> Any:
        if name in self.variables:
            return self.canon(self.variables[name])
        if name in self.tree.get("parameters", {}):
            if name in self.arguments and self.caller is not None:
                return self.caller.canon(self.arguments[name])
            return f"${{param:{plain(name)}}}"
        if name in self.tree.get("resources", {}):
            kind = self.tree["resources"][name]["type"]
            _, _, body, _ = next(r for r in self.resources() if r[0] == name)
            return f"${{{kind}:{self.canon(body.get('name'))}}}"
        return f"${{module:{name}}}"

    def _access(self, operands: dict[str, Any]) -> Any:
        base, key = operands["operand_1"], operands["operand_2"]
        if isinstance(base, str) and base in self.tree.get("modules", {}) and isinstance(key, dict):
            # `app.outputs.x`: the module's output x, read in the module's own terms.
            output = key["operator"]["operands"]["operand_2"]
            module = module_file(self, base)
            return module.canon(module.tree["outputs"][output]["value"])
        resolved = self.canon(base)
        if resolved == ALLOWED_ROLES and isinstance(key, dict):  # allowedRoles.cosmosData.roleDefinitionIds
            key = key["operator"]["operands"]["operand_1"]
        if resolved == ALLOWED_ROLES and isinstance(key, str):
            return f"{ALLOWED_ROLES}:{key}"
        if isinstance(resolved, dict) and isinstance(key, str) and key in resolved:
            return resolved[key]
        return resolved  # a resource: what is read from it does not matter

    def _interpolate(self, value: str) -> str:
        def replace(match: re.Match[str]) -> str:
            expression = match.group(1)
            root = re.match(r"^(\w+)", expression)
            if root is None or root.group(1) not in self._names():
                return match.group(0)
            if "." in expression:
                accessor = {"operand_1": root.group(1), "operand_2": expression.split(".", 1)[1].split(".")[0]}
                resolved = self._access(accessor)
            else:
                resolved = self._name(expression)
            return resolved if isinstance(resolved, str) else text(resolved)

        return str(key_vault_reference(_INTERPOLATION.sub(replace, value)))


@cache
def bicep_files() -> tuple[BicepFile, ...]:
    parser = BicepParser()
    main = BicepFile(BICEP / "main.bicep", parser.parse(file_path=BICEP / "main.bicep"))
    files = [main]
    for path in sorted((BICEP / "modules").glob("*.bicep")):
        tree = parser.parse(file_path=path)
        calls = [m for m in main.tree["modules"].values() if m["detail"]["path"] == f"modules/{path.name}"]
        arguments = _module_config(calls[0])["params"] if calls else {}
        files.append(BicepFile(path, tree, arguments, main))
    return tuple(files)


def _module_config(module: dict[str, Any]) -> dict[str, Any]:
    config = module["config"]
    return config["config"] if "loop_type" in config else config


def bicep_file(name: str) -> BicepFile:
    return next(f for f in bicep_files() if f.path.name == name)


def module_file(main: BicepFile, symbol: str) -> BicepFile:
    path = main.tree["modules"][symbol]["detail"]["path"]
    return bicep_file(Path(path).name)


@cache
def bicep_inventory() -> Inventory:
    inv = Inventory()
    main = bicep_file("main.bicep")
    app = bicep_file("jitgate.bicep")

    for f in bicep_files():
        for symbol, kind, body, _ in f.resources():
            if f.tree["resources"][symbol]["existing"]:
                continue  # a resource this deployment reads, not one it deploys
            inv.kinds.add(kind)
            props = f.canon(body.get("properties", {}))
            if kind == "Microsoft.Authorization/roleAssignments" and f.path.name.startswith("cosmos-"):
                continue  # the cosmos-data permission, a custom role: see _bicep_databases
            if kind == "Microsoft.Authorization/roleAssignments":
                [role_id] = guids(props["roleDefinitionId"])
                grant = f.path.name.startswith("grant-")
                scope = GRANT_SCOPE if grant else f.canon(body["scope"])
                inv.role_assignments.add((role_id, scope, props["principalType"], props["principalId"]))
                if grant:
                    inv.grants.append(
                        {"role": role_id, "condition": props["condition"], "version": props["conditionVersion"]}
                    )
            elif kind == "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments":
                [role_id] = guids(props["roleDefinitionId"])
                inv.cosmos_data_roles.append((role_id, props["scope"], props["principalId"]))

    # Which scopes the grant modules are deployed to: every entry of grantScopes, by kind of scope.
    for symbol, module in main.tree["modules"].items():
        if Path(module["detail"]["path"]).name.startswith("grant-"):
            loop = module["config"]["loop_type"]["detail"]["array_name"]
            assert "${param:grantscopes}" in text(main.canon(loop)), (symbol, loop)
            assert main.canon(_module_config(module)["params"]["condition"]) == f"{ALLOWED_ROLES}:condition"
        if Path(module["detail"]["path"]).name == "activity-log.bicep":
            inv.activity_log_subscriptions = text(main.canon(module["config"]["loop_type"]["detail"]["array_name"]))

    _bicep_databases(inv, main)

    activity = bicep_file("activity-log.bicep")
    logs = activity.resource("activityLog")["properties"]["logs"]
    inv.activity_log_categories = set(activity.canon(logs["loop_type"]["detail"]["array_name"]))

    queues = app.tree["resources"]["queues"]["config"]
    for queue_name in app.canon(queues["loop_type"]["detail"]["array_name"]):
        settings = app.canon(queues["config"]["properties"])
        inv.queues[queue_name] = {QUEUE_ARGUMENTS.get(k, snake(k)): v for k, v in settings.items()}

    inv.cosmos_database = app.canon("cosmosDatabase")
    containers = app.tree["resources"]["containers"]["config"]
    [path] = containers["config"]["properties"]["resource"]["partitionKey"]["paths"]
    assert path["operator"]["operands"] == {"operand_1": "container", "operand_2": "partitionKey"}
    for container in app.canon(containers["loop_type"]["detail"]["array_name"]):
        inv.cosmos_containers[container["name"]] = container["partitionKey"]

    site = app.resource("functionApp")["properties"]
    for setting in site["siteConfig"]["appSettings"]:
        value = app.canon(setting["value"])
        if isinstance(value, dict | list):
            value = computed(re.findall(r"\$\{param:(\w+)\}", text(value)))
        inv.app_settings[setting["name"]] = value

    auth = app.canon(app.resource("functionApp__authentication")["properties"])
    aad = auth["identityProviders"]["azureActiveDirectory"]
    inv.authentication = {
        "enabled": auth["platform"]["enabled"],
        "require authentication": auth["globalValidation"]["requireAuthentication"],
        "unauthenticated action": auth["globalValidation"]["unauthenticatedClientAction"],
        "excluded paths": auth["globalValidation"]["excludedPaths"],
        "require https": auth["httpSettings"]["requireHttps"],
        "client id": aad["registration"]["clientId"],
        "audiences": aad["validation"]["allowedAudiences"],
        "token store": auth["login"]["tokenStore"]["enabled"],
    }

    [criterion] = app.canon(app.resource("deadLetterAlert")["properties"]["criteria"]["allOf"])
    [dimension] = criterion["dimensions"]
    inv.alert = {
        "metric": f"{criterion['metricNamespace']}:{criterion['metricName']}",
        "aggregation": criterion["timeAggregation"],
        "operator": criterion["operator"],
        "threshold": criterion["threshold"],
        "dimension": dimension["name"],
        "entities": sorted(dimension["values"]),
        "scope": app.canon(app.resource("deadLetterAlert")["properties"]["scopes"]),
    }

    def props(symbol: str) -> dict[str, Any]:
        return dict(app.canon(app.resource(symbol)["properties"]))

    cosmos = props("cosmos")
    inv.settings = {
        "storage shared keys": [props(s)["allowSharedKeyAccess"] for s in ("functionStorage", "archiveStorage")],
        "storage replication": [app.resource(s)["sku"]["name"] for s in ("functionStorage", "archiveStorage")],
        "storage public blobs": [props(s)["allowBlobPublicAccess"] for s in ("functionStorage", "archiveStorage")],
        "storage minimum tls": [props(s)["minimumTlsVersion"] for s in ("functionStorage", "archiveStorage")],
        "service bus sku": app.resource("serviceBus")["sku"]["name"],
        "service bus local auth": not props("serviceBus")["disableLocalAuth"],
        "cosmos local auth": not cosmos["disableLocalAuth"],
        "cosmos capabilities": [c["name"] for c in cosmos["capabilities"]],
        "cosmos backup": cosmos["backupPolicy"]["continuousModeProperties"]["tier"],
        "app insights local auth": not props("appInsights")["DisableLocalAuth"],
        "key vault rbac": props("vault")["enableRbacAuthorization"],
        "key vault purge protection": props("vault")["enablePurgeProtection"],
        "archive retention days": props("archiveImmutability")["immutabilityPeriodSinceCreationInDays"],
        "archive protected appends": props("archiveImmutability")["allowProtectedAppendWrites"],
        "archive container": app.canon(app.resource("archiveImmutability")["parent"]),
        "key vault reference identity": app.canon(site["keyVaultReferenceIdentity"]),
        "site identity": [
            app.canon(k.strip("'")) for k in app.resource("functionApp")["identity"]["userAssignedIdentities"]
        ],
        "runtime": "{name} {version}".format(**app.canon(site["functionAppConfig"]["runtime"])),
        "deployment storage auth": site["functionAppConfig"]["deployment"]["storage"]["authentication"]["type"],
        "https only": site["httpsOnly"],
        "minimum tls": site["siteConfig"]["minTlsVersion"],
        "ftps": site["siteConfig"]["ftpsState"],
        "basic publishing credentials": props("publishingCredentials")["allow"],
    }

    inv.parameters = {plain(p) for p in main.tree["parameters"]}
    inv.outputs = {plain(o) for o in main.tree["outputs"]}
    return inv


def _bicep_databases(inv: Inventory, main: BicepFile) -> None:
    """The custom roles main.bicep defines, and what its database modules deploy: over which list, when, and
    with which role or administrator properties."""
    for symbol, kind, body, _ in main.resources():
        if kind == "Microsoft.Authorization/roleDefinitions":
            props = body["properties"]
            [permissions] = props["permissions"]
            inv.custom_roles[main.canon(props["roleName"])] = {
                "type": props["type"],
                "actions": main.canon(permissions["actions"]),
                "not actions": main.canon(permissions["notActions"]),
                "assignable at": main.references(props["assignableScopes"]),
                "when": main.references(main.condition(symbol)),
            }
    for symbol, module in main.tree["modules"].items():
        name = Path(module["detail"]["path"]).name
        if not name.startswith(("cosmos-", "postgres-entra-", "sql-entra-")):
            continue
        loop = module["config"]["loop_type"]["detail"]["array_name"]["operator"]
        assert loop["type"] == "conditional", (symbol, loop)
        branches = loop["operands"]
        over = next(v for v in (branches["true_value"], branches["false_value"]) if v != [])
        where = {"over": BICEP_DATABASE_LOOPS[over], "when": main.references(branches["condition"])}
        params = _module_config(module)["params"]
        mod = module_file(main, symbol)
        [(kind, body)] = [(k, b) for s, k, b, _ in mod.resources() if not mod.tree["resources"][s]["existing"]]
        if kind == "Microsoft.Authorization/roleAssignments":
            definition = params["roleDefinitionId"]["operator"]["operands"]["operand_1"]
            props = mod.canon(body["properties"])
            scope = "resource group" if "scope" not in body else mod.tree["resources"][body["scope"]]["type"]
            inv.database_assignments.append({
                **where, "role": main.canon(main.resource(definition)["properties"]["roleName"]), "at": scope,
                "principal": props["principalId"], "principal type": props["principalType"],
            })
        else:
            props = body["properties"]
            inv.entra_admins[kind] = {**where, "name": mod.references(body["name"]), "properties": {
                key: value if key in ("principalType", "administratorType") else mod.references(value)
                for key, value in props.items()}}


# ---------------------------------------------------------------- Terraform


@cache
def terraform_tree() -> dict[str, Any]:
    options = hcl2.SerializationOptions(strip_string_quotes=True, with_comments=False, explicit_blocks=False)
    merged: dict[str, Any] = {"resource": [], "locals": {}, "variable": {}, "output": {}}
    for path in sorted(TERRAFORM.glob("*.tf")):
        with path.open(encoding="utf-8") as handle:
            tree = hcl2.load(handle, serialization_options=options)
        merged["resource"].extend(tree.get("resource", []))
        for key in ("locals", "variable", "output"):
            for entry in tree.get(key, []):
                merged[key].update(entry)
    return merged


def terraform_resources() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(resource type, name, body) for each Terraform resource."""
    for entry in terraform_tree()["resource"]:
        for kind, named in entry.items():
            for name, body in named.items():
                yield kind, name, body


def terraform_resource(kind: str, name: str) -> dict[str, Any]:
    return next(body for k, n, body in terraform_resources() if (k, n) == (kind, name))


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body[name]
    return value[0] if isinstance(value, list) else value


def tf_kind(kind: str, body: dict[str, Any]) -> str:
    return body["type"].split("@")[0] if kind.startswith("azapi_") else TERRAFORM_TO_ARM.get(kind, kind)


def tf_canon(value: Any) -> Any:
    if isinstance(value, list):
        return [tf_canon(v) for v in value]
    if isinstance(value, dict):
        return {k: tf_canon(v) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    whole = re.fullmatch(r"\$\{(?:tostring\()?([\w.]+)\)?\}", value)
    if whole and not whole.group(1).startswith(("each.", "var.")) and "(" not in value.replace("tostring(", ""):
        resolved = _tf_expression(whole.group(1))
        return str(resolved) if value.startswith("${tostring(") else resolved
    return key_vault_reference(_INTERPOLATION.sub(lambda m: _tf_text(_tf_expression(m.group(1))), value))


def _tf_text(value: Any) -> str:
    return value if isinstance(value, str) else text(value)


def _tf_expression(expression: str) -> Any:
    parts = expression.split(".")
    if parts[0] == "local":
        if parts[1] == "allowed_roles":
            return f"{ALLOWED_ROLES}:{parts[2]}" if len(parts) > 2 else ALLOWED_ROLES
        resolved: Any = terraform_tree()["locals"]
        for part in parts[1:]:
            resolved = resolved[part]
        return tf_canon(resolved)
    if parts[0] == "var" and len(parts) == 2:
        return f"${{param:{plain(parts[1])}}}"
    if len(parts) >= 2 and (parts[0] in TERRAFORM_TO_ARM or parts[0].startswith("azapi_")):
        body = terraform_resource(parts[0], parts[1])
        return f"${{{tf_kind(parts[0], body)}:{tf_canon(body.get('name'))}}}"
    return "${" + expression + "}"


@cache
def terraform_inventory() -> Inventory:
    inv = Inventory()
    locals_ = terraform_tree()["locals"]

    for kind, name, body in terraform_resources():
        inv.kinds.add(tf_kind(kind, body))
        if kind == "azurerm_role_assignment" and name.startswith("cosmos_"):
            continue  # the cosmos-data permission, a custom role: see _terraform_databases
        if kind == "azurerm_role_assignment":
            [role_id] = guids(tf_canon(body["role_definition_id"]))
            grant = body["scope"] == "${each.value}"
            if grant:
                assert "var.grant_scopes" in body["for_each"], body["for_each"]
            scope = GRANT_SCOPE if grant else tf_canon(body["scope"])
            inv.role_assignments.add((role_id, scope, body["principal_type"], tf_canon(body["principal_id"])))
            if grant:
                inv.grants.append(
                    {
                        "role": role_id,
                        "condition": tf_canon(body["condition"]),
                        "version": tf_canon(body["condition_version"]),
                    }
                )
        elif kind == "azurerm_cosmosdb_sql_role_assignment":
            [role_id] = guids(tf_canon(body["role_definition_id"]))
            inv.cosmos_data_roles.append((role_id, tf_canon(body["scope"]), tf_canon(body["principal_id"])))
        elif kind == "azurerm_monitor_diagnostic_setting" and name == "activity_log":
            dynamic = block(body, "dynamic")["enabled_log"]
            inv.activity_log_categories = set(tf_canon(dynamic["for_each"]))
            assert body["for_each"] == "${toset(local.activity_log_subscriptions)}"
            inv.activity_log_subscriptions = locals_["activity_log_subscriptions"]

    _terraform_databases(inv)

    queue = terraform_resource("azurerm_servicebus_queue", "this")
    names = re.findall(r"local\.(\w+)", queue["for_each"])
    for queue_name in (locals_[n] for n in names):
        inv.queues[queue_name] = {
            key: tf_canon(value) for key, value in queue.items() if key not in ("for_each", "name", "namespace_id")
        }

    inv.cosmos_database = _tf_expression("azurerm_cosmosdb_sql_database.this.name")
    container = terraform_resource("azurerm_cosmosdb_sql_container", "this")
    assert container["for_each"] == "${local.cosmos_containers}"
    assert container["partition_key_paths"] == ["${each.value}"]
    inv.cosmos_containers = dict(locals_["cosmos_containers"])

    app = terraform_resource("azurerm_function_app_flex_consumption", "this")
    assert app["app_settings"] == (
        '${{for k, v in local.app_settings : k => v if k != "APPLICATIONINSIGHTS_CONNECTION_STRING"}}'
    ), app["app_settings"]
    site_config = block(app, "site_config")
    assert site_config["application_insights_connection_string"] == (
        "${local.app_settings.APPLICATIONINSIGHTS_CONNECTION_STRING}"
    )
    for key, value in locals_["app_settings"].items():
        function = isinstance(value, str) and re.match(r"^\$\{(?!tostring\()\w+\(", value)
        inv.app_settings[key] = computed(plain(v) for v in re.findall(r"var\.(\w+)", value)) if function else (
            tf_canon(value)
        )

    auth = tf_canon(block(app, "auth_settings_v2"))
    aad = block(auth, "active_directory_v2")
    inv.authentication = {
        "enabled": auth["auth_enabled"],
        "require authentication": auth["require_authentication"],
        "unauthenticated action": auth["unauthenticated_action"],
        "excluded paths": auth["excluded_paths"],
        "require https": auth["require_https"],
        "client id": aad["client_id"],
        "audiences": aad["allowed_audiences"],
        "token store": block(auth, "login")["token_store_enabled"],
    }

    alert = terraform_resource("azurerm_monitor_metric_alert", "dead_letters")
    criteria = block(alert, "criteria")
    dimension = block(criteria, "dimension")
    inv.alert = {
        "metric": f"{criteria['metric_namespace']}:{criteria['metric_name']}",
        "aggregation": criteria["aggregation"],
        "operator": criteria["operator"],
        "threshold": criteria["threshold"],
        "dimension": dimension["name"],
        "entities": sorted(tf_canon(dimension["values"])),
        "scope": tf_canon(alert["scopes"]),
    }

    def res(kind: str, name: str) -> dict[str, Any]:
        return dict(tf_canon(terraform_resource(kind, name)))

    accounts = [res("azurerm_storage_account", n) for n in ("function", "archive")]
    cosmos = res("azurerm_cosmosdb_account", "this")
    policy = res("azurerm_storage_container_immutability_policy", "archive")
    update = res("azapi_update_resource", "key_vault_reference_identity")
    web = res("azapi_update_resource", "ftps_disabled")
    assert update["resource_id"] == tf_canon("${azurerm_function_app_flex_consumption.this.id}")
    inv.settings = {
        "storage shared keys": [a["shared_access_key_enabled"] for a in accounts],
        "storage replication": [f"{a['account_tier']}_{a['account_replication_type']}" for a in accounts],
        "storage public blobs": [a["allow_nested_items_to_be_public"] for a in accounts],
        "storage minimum tls": [a["min_tls_version"] for a in accounts],
        "service bus sku": res("azurerm_servicebus_namespace", "this")["sku"],
        "service bus local auth": res("azurerm_servicebus_namespace", "this")["local_auth_enabled"],
        "cosmos local auth": not cosmos["local_authentication_disabled"],
        "cosmos capabilities": [c["name"] for c in cosmos["capabilities"]],
        "cosmos backup": block(cosmos, "backup")["tier"],
        "app insights local auth": not res("azurerm_application_insights", "this")["local_authentication_disabled"],
        "key vault rbac": res("azurerm_key_vault", "this")["rbac_authorization_enabled"],
        "key vault purge protection": res("azurerm_key_vault", "this")["purge_protection_enabled"],
        "archive retention days": policy["immutability_period_in_days"],
        "archive protected appends": policy["protected_append_writes_enabled"],
        "archive container": policy["storage_container_resource_manager_id"],
        "key vault reference identity": update["body"]["properties"]["keyVaultReferenceIdentity"],
        "site identity": block(tf_canon(app), "identity")["identity_ids"],
        "runtime": f"{app['runtime_name']} {app['runtime_version']}",
        "deployment storage auth": app["storage_authentication_type"],
        "https only": app["https_only"],
        "minimum tls": site_config["minimum_tls_version"],
        "ftps": web["body"]["properties"]["ftpsState"],
        "basic publishing credentials": app["webdeploy_publish_basic_authentication_enabled"],
    }

    inv.parameters = {plain(v) for v in terraform_tree()["variable"]}
    inv.outputs = {plain(o) for o in terraform_tree()["output"]}
    return inv


def tf_references(expression: str) -> list[str]:
    """The variables (by their plain name) and allowed-roles.json fields an expression reads, through locals."""
    found: set[str] = set()
    for local in re.findall(r"local\.(\w+)", expression):
        if local == "allowed_roles":
            continue
        found.update(tf_references(text(terraform_tree()["locals"][local])))
    found.update(plain(v) for v in re.findall(r"var\.(\w+)", expression))
    found.update(re.findall(r"local\.allowed_roles\.(\w+)", expression))
    return sorted(found)


def _tf_loop(for_each: str) -> dict[str, Any]:
    """`condition ? toset(list) : toset([])` (either way round): over which list, and when."""
    found = re.fullmatch(r"\$\{(.+) \? toset\((.+)\) : toset\((.+)\)\}", for_each)
    assert found is not None, for_each
    over = next(v for v in found.group(2, 3) if v != "[]")
    return {"over": TERRAFORM_DATABASE_LOOPS[over], "when": tf_references(found[1])}


def _terraform_databases(inv: Inventory) -> None:
    """What databases.tf deploys, in the words _bicep_databases uses."""
    definitions = {}
    for kind, name, body in terraform_resources():
        if kind == "azurerm_role_definition":
            definitions[name] = tf_canon(body["name"])
            permissions = block(body, "permissions")
            count = re.fullmatch(r"\$\{(.+) \? 1 : 0\}", body["count"])
            assert count is not None, body["count"]
            inv.custom_roles[tf_canon(body["name"])] = {
                "type": "CustomRole",
                "actions": tf_canon(permissions["actions"]),
                "not actions": tf_canon(permissions["not_actions"]),
                "assignable at": tf_references(body["assignable_scopes"]),
                "when": tf_references(count[1]),
            }
    for kind, name, body in terraform_resources():
        if kind == "azurerm_role_assignment" and name.startswith("cosmos_"):
            assert body["scope"] == "${each.value}", body["scope"]
            definition = re.fullmatch(r"\$\{azurerm_role_definition\.(\w+)\[0\]\.role_definition_resource_id\}",
                                      body["role_definition_id"])
            assert definition is not None, body["role_definition_id"]
            where = _tf_loop(body["for_each"])
            inv.database_assignments.append({
                **where, "role": definitions[definition[1]],
                "at": ("Microsoft.DocumentDB/databaseAccounts" if where["over"] == "each Cosmos DB account"
                       else "resource group"),
                "principal": tf_canon(body["principal_id"]), "principal type": body["principal_type"],
            })
        elif kind == "azapi_resource" and name.endswith("_admin"):
            assert body["parent_id"] == "${each.value}", body["parent_id"]
            props = body["body"]["properties"]
            inv.entra_admins[tf_kind(kind, body)] = {
                **_tf_loop(body["for_each"]), "name": tf_references(body["name"]), "properties": {
                    key: value if key in ("principalType", "administratorType") else tf_references(value)
                    for key, value in props.items()}}
