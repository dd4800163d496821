"""What only the `azure-sql` provider promises, against the fake Azure SQL Database (tests/azure/fake_sql.py):
access someone already had is never touched, only users jitgate made are dropped, a revoke ends open sessions,
hostile names never reach T-SQL unquoted, failures are told transient or permanent and leave nothing half made,
and the fake itself refuses what SQL Server would not parse."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from sqlglot.dialects.tsql import TSQL
from sqlglot.tokens import TokenType

from shared.adapters.azure.sql import MEMBER_MARK, USER_MARK, AzureSqlGrants
from shared.adapters.azure.sql_check import check_server
from shared.adapters.databases.check import check_all, render
from shared.adapters.databases.servers import Servers
from shared.domain.errors import AssignmentExists, PermanentError, TransientError
from shared.domain.ledger import GrantKey, marker_for, role_id
from shared.domain.policy import Policy
from shared.infra_sql import setup_script as setup_script_for
from tests.azure.fake_sql import JITGATE_OID, JITGATE_USER, FakeSqlDatabase, FakeSqlSyntaxError
from tests.azure.sql_world import SCOPE, SqlWorld
from tests.fakes.world import JANE, World, access_request

REQUEST = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


@pytest.fixture
def world() -> SqlWorld:
    return SqlWorld()


@pytest.fixture
def provider(world: SqlWorld) -> AzureSqlGrants:
    return world.provider(session_end_wait=0.2)


def key(role: str = "payments_read", principal: str | None = None) -> GrantKey:
    return GrantKey.of("azure-sql", principal or str(uuid.uuid4()), role_id(role), SCOPE)


def grant(provider: AzureSqlGrants, k: GrantKey, principal_type: str = "User") -> None:
    provider.create_assignment(k, k.assignment_name(), marker_for(REQUEST), principal_type)


def revoke(provider: AzureSqlGrants, k: GrantKey) -> None:
    provider.delete_assignment(SCOPE, k.assignment_name())


def test_a_membership_someone_else_granted_is_preexisting_and_never_touched(world: SqlWorld,
                                                                             provider: AzureSqlGrants) -> None:
    # GIVEN a person whose user an admin made, under a name of the admin's choosing, and put in the role
    k = key()
    db = world.main
    db.add_user(k.principal_id, "Jane (payments)")
    db.add_member("payments_read", "Jane (payments)")
    # THEN jitgate finds it by the person's object id, as someone else's, and will not make its own
    found = provider.find_assignment(k)
    assert found is not None and found.name != k.assignment_name() and "outside jitgate" in found.description
    with pytest.raises(AssignmentExists) as raised:
        grant(provider, k)
    assert raised.value.existing_name == found.name
    assert provider.list_marked() == []
    # AND a revoke of jitgate's name leaves the membership and the user alone
    revoke(provider, k)
    assert db.roles_of("Jane (payments)") == ["payments_read"]
    assert db.properties_of("Jane (payments)") == {}


def test_a_user_made_outside_jitgate_is_never_dropped(world: SqlWorld, provider: AzureSqlGrants) -> None:
    k = key()
    world.main.add_user(k.principal_id, "jane@example.com")

    grant(provider, k)
    assert world.main.roles_of("jane@example.com") == ["payments_read"]
    assert list(world.main.properties_of("jane@example.com")) == [f"{MEMBER_MARK}{_role(world, 'payments_read')}"]
    revoke(provider, k)

    assert world.main.roles_of("jane@example.com") == []
    assert world.main.properties_of("jane@example.com") == {}
    assert world.main.find("jane@example.com") is not None


def test_a_user_jitgate_made_is_dropped_only_with_its_last_grant(world: SqlWorld, provider: AzureSqlGrants) -> None:
    # GIVEN two grants on one user jitgate created from the tenant, named as the servers file says
    read = key()
    write = key("payments_write", principal=read.principal_id)
    grant(provider, read)
    grant(provider, write)
    name = world.logins[read.principal_id]
    user = world.main.principal(name)
    assert user.type == "E" and USER_MARK in world.main.properties_of(name)
    assert [a.key for a in provider.list_marked()] == sorted([read, write])
    # WHEN one ends THEN the user stays for the other
    revoke(provider, read)
    assert world.main.roles_of(name) == ["payments_write"]
    # WHEN the last ends THEN the user is gone
    revoke(provider, write)
    assert world.main.find(name) is None


def test_a_user_jitgate_made_that_owns_something_is_kept(world: SqlWorld, provider: AzureSqlGrants) -> None:
    k = key()
    grant(provider, k)
    name = world.logins[k.principal_id]
    world.main.principal(name).owns_schema = True

    revoke(provider, k)

    assert world.main.find(name) is not None and world.main.roles_of(name) == []
    assert list(world.main.properties_of(name)) == [USER_MARK]
    # AND a later grant uses it again, and its last revoke tries again to drop it
    grant(provider, k)
    world.main.principal(name).owns_schema = False
    revoke(provider, k)
    assert world.main.find(name) is None


def test_a_revoke_ends_the_persons_open_sessions(world: SqlWorld, provider: AzureSqlGrants) -> None:
    # GIVEN the person signed in twice, and someone else signed in
    k = key()
    grant(provider, k)
    mine = {world.main.open_session(k.principal_id), world.main.open_session(k.principal_id)}
    other = world.main.open_session(str(uuid.uuid4()))
    # WHEN the grant is revoked
    revoke(provider, k)
    # THEN the person's sessions are over, the other one and jitgate's own are not
    assert not mine & set(world.main.state.sessions)
    assert other in world.main.state.sessions
    kills = [sql for sql, _ in world.main.statements if sql.startswith("KILL")]
    assert sorted(kills) == sorted(f"KILL {s}" for s in mine)


def test_a_session_that_will_not_end_makes_the_revoke_transient(world: SqlWorld, provider: AzureSqlGrants) -> None:
    k = key()
    grant(provider, k)
    stubborn = world.main.open_session(k.principal_id)
    world.main.unkillable.add(stubborn)

    with pytest.raises(TransientError, match="still open after KILL"):
        revoke(provider, k)

    world.main.unkillable.clear()
    revoke(provider, k)
    assert stubborn not in world.main.state.sessions


def test_a_revoke_that_died_after_drop_member_ends_the_sessions_when_it_runs_again(
        world: SqlWorld, provider: AzureSqlGrants) -> None:
    # GIVEN a session, and a revoke that removed the membership and then died (KILL failed)
    k = key()
    grant(provider, k)
    name = world.logins[k.principal_id]
    session = world.main.open_session(k.principal_id)
    world.main.fail("KILL", 40501, "1234")
    with pytest.raises(TransientError, match="service is currently busy"):
        revoke(provider, k)
    assert world.main.roles_of(name) == [] and session in world.main.state.sessions
    # WHEN it runs again THEN the session ends and the user jitgate made is gone
    revoke(provider, k)
    assert session not in world.main.state.sessions and world.main.find(name) is None
    # AND once the user is gone, a session it left is still found by its SID
    left = world.main.open_session(k.principal_id)
    revoke(provider, k)
    assert left not in world.main.state.sessions


def test_a_role_dropped_meanwhile_ends_the_grant(world: SqlWorld, provider: AzureSqlGrants) -> None:
    k = key()
    grant(provider, k)
    name = world.logins[k.principal_id]
    world.main.drop_role("payments_read")

    revoke(provider, k)

    assert world.main.find(name) is None


def test_a_membership_an_admin_removed_is_reapplied_and_its_mark_updated(world: SqlWorld,
                                                                         provider: AzureSqlGrants) -> None:
    k = key()
    grant(provider, k)
    name = world.logins[k.principal_id]
    world.main.drop_member("payments_read", name)
    assert provider.find_assignment(k) is None

    grant(provider, k)

    assert world.main.roles_of(name) == ["payments_read"]
    assert any("sp_updateextendedproperty" in sql for sql, _ in world.main.statements)


HOSTILE = ["pay]ments", "pay'ments", "payments; DROP USER [jitgate-identity]; --", "]]]", "Payments Read",
           "x\\y", "名前"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_role_and_user_names_round_trip(world: SqlWorld, name: str) -> None:
    # GIVEN a role and a person's user name that are hostile, the role made by an admin
    db = world.main
    db.add_role(name)
    db.grant("ALTER", role=name)
    principal = str(uuid.uuid4())
    world.logins.named[principal] = f"{name} user"
    provider = world.provider()
    # WHEN jitgate grants and revokes it
    k = GrantKey.of("azure-sql", principal, provider.resolve_role(SCOPE, name), SCOPE)
    grant(provider, k)
    assert db.roles_of(f"{name} user") == [name]
    assert [a.key for a in provider.list_marked()] == [k]
    revoke(provider, k)
    # THEN exactly that was made and removed, jitgate's own user is untouched, every statement was one of the
    # kinds jitgate sends, and in T-SQL text the names only ever stood whole as [bracketed] identifiers
    assert db.find(f"{name} user") is None and db.find(JITGATE_USER) is not None
    kinds, identifiers = set(), set()
    for sql, _ in db.statements:
        tokens = TSQL().tokenize(sql)
        kinds.add(" ".join(t.text.upper() for t in tokens[:2]) if tokens[0].text.upper() != "SELECT" else "SELECT")
        identifiers |= {t.text for t in tokens if t.token_type is TokenType.IDENTIFIER}
    assert kinds <= {"SELECT", "CREATE USER", "ALTER ROLE", "EXEC SYS", "DROP USER"}
    assert identifiers == {name, f"{name} user"}


def test_the_fixed_roles_that_let_their_holder_escape_are_never_granted(provider: AzureSqlGrants) -> None:
    for role in ("db_owner", "DB_SECURITYADMIN", "db_accessadmin", "db_ddladmin", "public"):
        with pytest.raises(PermanentError, match="escape every rule"):
            provider.resolve_role(SCOPE, role)
    assert provider.resolve_role(SCOPE, "DB_DataReader") == "db_datareader"


def test_a_fixed_role_needs_db_owner_and_the_error_says_what_to_do(world: SqlWorld, provider: AzureSqlGrants) -> None:
    k = key("db_datareader")
    with pytest.raises(PermanentError, match="jitgate databases check"):
        grant(provider, k)
    # NB. The transaction that created the user is rolled back with the failed ALTER ROLE.
    assert world.main.find(world.logins[k.principal_id]) is None
    world.main.add_member("db_owner", JITGATE_USER)
    grant(provider, k)
    assert world.main.roles_of(world.logins[k.principal_id]) == ["db_datareader"]


def test_a_transient_failure_leaves_nothing_half_made_and_the_retry_succeeds(world: SqlWorld,
                                                                            provider: AzureSqlGrants) -> None:
    k = key()
    world.main.fail("EXEC", 40501, "1234")  # after CREATE USER and ALTER ROLE, marking the membership fails
    with pytest.raises(TransientError) as raised:
        grant(provider, k)
    assert raised.value.retry_after == 10.0
    assert world.main.find(world.logins[k.principal_id]) is None
    world.main.fail("connect", 40613, "payments", "sql-main", "abc")
    with pytest.raises(TransientError, match="not currently available"):
        grant(provider, k)
    grant(provider, k)
    assert provider.find_assignment(k) is not None


def test_jitgate_without_a_user_in_the_database_is_told_how_to_fix_it(world: SqlWorld,
                                                                     provider: AzureSqlGrants) -> None:
    world.main.refuse_login = True
    with pytest.raises(PermanentError, match=r"Login failed.*azure-sql-setup\.sql"):
        provider.find_assignment(key())


def test_groups_get_group_users_and_a_type_the_tenant_disagrees_with_is_refused(world: SqlWorld,
                                                                             provider: AzureSqlGrants) -> None:
    group, user = key(), key()
    world.tenant.add(group.principal_id, "payments-oncall", "X")
    grant(provider, group, "Group")
    assert world.main.principal(world.logins[group.principal_id]).type == "X"
    with pytest.raises(PermanentError, match=r"UnmatchedPrincipalType: .* is a Microsoft Entra user"):
        grant(provider, user, "Group")
    assert world.main.find(world.logins[user.principal_id]) is None
    with pytest.raises(PermanentError, match="UnmatchedPrincipalType"):
        grant(provider, key(), "ServicePrincipal")


def test_a_principal_the_servers_file_names_no_user_for_is_refused_with_what_to_do(world: SqlWorld) -> None:
    servers = Servers(tuple(replace(s, logins={}) for s in world.servers().servers), "servers.yaml")
    provider = AzureSqlGrants(servers, connect=world.connect)
    with pytest.raises(PermanentError, match=r"no user for principal .* name it under `logins` in servers\.yaml"):
        grant(provider, key())


def test_an_object_id_the_tenant_does_not_know_is_permanent(world: SqlWorld, provider: AzureSqlGrants) -> None:
    k = key()
    world.tenant.missing.add(k.principal_id)
    with pytest.raises(PermanentError, match="not a valid object id"):
        grant(provider, k)


def _role(world: SqlWorld, name: str) -> int:
    return world.main.principal(name).principal_id


# ---------------------------------------------------------------- the fake refuses what SQL Server would


@pytest.mark.parametrize("sql", [
    "ALTER ROLE [payments_read] DROP MEMBR [jane]",        # a misspelt keyword sqlglot alone lets through
    "ALTER ROLE payments_read ADD MEMBER [jane]",          # an identifier jitgate did not quote
    "CREATE USER [jane] FROM EXTERNAL PROVIDER WITH OBJECT_ID = ?",  # T-SQL takes no parameter in DDL
    "SELECT 1; DROP USER [jane]",                          # two statements in one
    "SELEC name FROM sys.database_principals",             # plain syntax error
    "ALTER ROLE [payments_read] ADD MEMBER [jane",         # an unclosed bracket
])
def test_the_fake_refuses_what_sql_server_would_not_parse(world: SqlWorld, sql: str) -> None:
    conn = world.main.connect()
    with pytest.raises(FakeSqlSyntaxError):
        conn.cursor().execute(sql, ("x",) if "?" in sql else ())


# ---------------------------------------------------------------- jitgate databases check

SETUP = Path(__file__).resolve().parents[2] / "infra" / "sql" / "azure-sql-setup.sql"


def run_as_admin(db: FakeSqlDatabase, *statements: str) -> None:
    cursor = db.connect(as_admin=True).cursor()
    for statement in statements:
        cursor.execute(statement)


def sqlcmd(text: str, **variables: str) -> list[str]:
    """A script as sqlcmd runs it: `:setvar` lines and -v variables substituted, one statement at a time."""
    lines = []
    for line in text.splitlines():
        setvar = re.fullmatch(r':setvar (\w+) "([^"]*)"', line)
        if setvar:
            variables[setvar[1]] = setvar[2]
        elif not line.lstrip().startswith("--"):
            lines.append(re.sub(r"\$\((\w+)\)", lambda m: variables[m[1]], line))
    return [statement.strip() for statement in "\n".join(lines).split(";") if statement.strip()]


def setup_script(user: str, object_id: str) -> list[str]:
    """infra/sql/azure-sql-setup.sql as sqlcmd runs it with -v."""
    return sqlcmd(SETUP.read_text(), jitgate_user=user, jitgate_object_id=object_id)


def test_the_setup_script_and_the_printed_fixes_give_jitgate_every_right_the_check_asks_for() -> None:
    # GIVEN a database nobody set up for jitgate, with the roles an application team made
    db = FakeSqlDatabase(bare=True)
    run_as_admin(db, "CREATE ROLE [payments_read]")
    server = SqlWorld().server("sql-main")
    roles = ["db_datareader", "payments_audit", "payments_read"]
    # THEN jitgate cannot even sign in, and the check says where to start
    [refused] = check_server(server, roles, connect=db.connect)
    assert not refused.ok and "Login failed" in refused.what and "azure-sql-setup.sql" in refused.fix
    # WHEN an admin runs the setup script THEN only what depends on the policy's roles is missing
    run_as_admin(db, *setup_script(JITGATE_USER, JITGATE_OID))
    findings = check_server(server, roles, connect=db.connect)
    failed = {f.what: f.fix for f in findings if not f.ok}
    assert list(failed) == ["may change the members of fixed role db_datareader (only db_owner members may)",
                            "role payments_audit exists", "may change the members of role payments_read (ALTER on it)"]
    assert failed["role payments_audit exists"] == "CREATE ROLE [payments_audit];"
    assert failed["may change the members of role payments_read (ALTER on it)"] == (
        "GRANT ALTER ON ROLE::[payments_read] TO [jitgate-identity];")
    # WHEN the admin runs the printed fixes (the fixed role's advice: a custom role in it) THEN the check passes
    advice = failed["may change the members of fixed role db_datareader (only db_owner members may)"]
    custom = advice.split("instead: ", 1)[1].split(" (and", 1)[0]
    run_as_admin(db, failed["role payments_audit exists"],
                 failed["may change the members of role payments_read (ALTER on it)"],
                 *(s.strip() for s in custom.split(";") if s.strip()))
    run_as_admin(db, "GRANT ALTER ON ROLE::[payments_audit] TO [jitgate-identity]")
    findings = check_server(server, ["db_datareader_jitgate", "payments_audit", "payments_read"], connect=db.connect)
    assert [f.what for f in findings if not f.ok] == []
    assert len(findings) == 7
    # AND the custom role made from the advice really is a member of the fixed one
    assert db.roles_of("db_datareader_jitgate") == ["db_datareader"]


SETUP_POLICY = """\
version: 1
groups:
  engineers: [dddddddd-0000-4000-8000-00000000000d]
rules:
  - name: sql-main-roles
    match:
      providers: [azure-sql]
      roles: [payments_read, "pay]ments's"]
      scopes: ["/subscriptions/*/resourceGroups/*/providers/Microsoft.Sql/servers/sql-main/databases/payments"]
      requesterGroups: [engineers]
    outcome: auto
    maxDuration: PT1H
"""


def test_the_setup_script_jitgate_prints_gives_it_every_right_the_check_asks_for() -> None:
    # GIVEN a database nobody set up for jitgate, with the roles an application team made (one with a bracket and
    # a quote in its name)
    db = FakeSqlDatabase(bare=True)
    run_as_admin(db, "CREATE ROLE [payments_read]", "CREATE ROLE [pay]]ments's]")
    server = SqlWorld().server("sql-main")
    # WHEN its Entra admin runs what `jitgate infra sql` prints for it with sqlcmd
    run_as_admin(db, *sqlcmd(setup_script_for(server, Policy.from_text(SETUP_POLICY), JITGATE_OID)))
    # THEN jitgate's check passes for the roles the policy grants there
    findings = check_server(server, ["pay]ments's", "payments_read"], connect=db.connect)
    assert [f.what for f in findings if not f.ok] == []
    assert len(findings) == 6


def test_the_check_names_a_wrong_user_a_policy_without_roles_an_ungrantable_role_and_users_it_kept(
        world: SqlWorld, provider: AzureSqlGrants) -> None:
    k = key()
    grant(provider, k)
    name = world.logins[k.principal_id]
    world.main.principal(name).owns_schema = True
    revoke(provider, k)
    server = replace(world.server("sql-main"), user="someone-else")

    findings = check_server(server, ["db_owner"], connect=world.connect)
    failed = {f.what: f.fix for f in findings if not f.ok}

    assert failed["signs in as jitgate-identity (Entra token) to database payments"] == (
        "set `user: jitgate-identity` for server 'sql-main' in the servers file")
    assert "role db_owner is no role jitgate grants (its holder could escape every rule)" in failed
    assert failed[f"user {name}, made by jitgate, is a member of nothing but was kept: it owns something"] == (
        f"look at what it owns, then DROP USER [{name}];")
    assert any("allows any role" in f.what for f in check_server(server, None, connect=world.connect))


DATABASES = SCOPE.rsplit("/servers/", 1)[0] + "/servers/*/databases/payments"
CHECK_POLICY = f"""\
version: 1
groups:
  engineers: ["dddddddd-0000-4000-8000-00000000000d"]
rules:
  - name: read
    match: {{providers: [azure-sql], roles: [payments_read], scopes: ["{DATABASES}"]}}
    outcome: auto
    maxDuration: PT1H
  - name: other-providers-roles-are-not-asked-for
    match: {{providers: [postgres], roles: [payments_write], scopes: ["**"]}}
    outcome: auto
    maxDuration: PT1H
"""


def test_check_all_reports_every_server_with_the_roles_its_provider_grants_there(world: SqlWorld,
                                                                                tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(CHECK_POLICY)
    world.main.grant("ALTER", role="payments_read")
    world.databases["sql-dr"].state.permissions.clear()

    results = check_all(world.servers(), Policy.load(policy_file), connect=world.connect)
    text = render(results, world.servers())

    assert all(f.ok for f in results["sql-main"])
    assert [f.what for f in results["sql-dr"] if not f.ok][:1] == [
        "has ALTER ANY USER (to create and drop the users it grants to)"]
    assert "sql-dr (azure-sql, sql-dr.database.windows.net:1433, database payments, scope " in text
    assert "       fix: GRANT ALTER ANY USER TO [jitgate-identity];" in text
    assert "payments_write" not in text


# ---------------------------------------------------------------- through the lifecycle

SQL_POLICY = f"""\
version: 1
groups:
  engineers: ["{JANE}"]
rules:
  - name: payments-sql-read
    match: {{providers: [azure-sql], roles: [payments_read], scopes: ["{DATABASES}"], requesterGroups: [engineers]}}
    outcome: auto
    maxDuration: PT1H
"""


def test_the_lifecycle_grants_revokes_and_reconciles_through_azure_sql(world: SqlWorld,
                                                                        provider: AzureSqlGrants) -> None:
    lifecycle = World()
    lifecycle.backends.providers = {**lifecycle.backends.providers, "azure-sql": provider}
    lifecycle.backends.policy = Policy.from_text(SQL_POLICY)
    doc = access_request(principal=JANE, role="payments_read", scope=SCOPE, duration="PT1H")
    doc["target"]["provider"] = "azure-sql"
    # WHEN Jane asks for an hour of payments_read THEN her user is made and put in the role
    request_id = lifecycle.submit(doc)
    assert lifecycle.state(request_id) == "active"
    jane = world.logins[JANE]
    assert world.main.roles_of(jane) == ["payments_read"]
    session = world.main.open_session(JANE)
    # AND a membership jitgate made that no hold explains is found by reconcile and removed
    orphan = key("payments_write")
    grant(provider, orphan)
    report = lifecycle.lifecycle.reconcile()
    assert report.orphans_removed == [orphan.assignment_name()]
    assert world.main.find(world.logins[orphan.principal_id]) is None
    # AND when the hour is up her membership, her session and the user jitgate made are gone
    lifecycle.advance(3600)
    assert lifecycle.state(request_id) == "revoked"
    assert session not in world.main.state.sessions and world.main.find(jane) is None
    assert lifecycle.chains_ok()
