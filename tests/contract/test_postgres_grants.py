"""What only the `postgres` provider promises, against a real throwaway PostgreSQL server: access someone
already had is never touched, only logins jitgate made are dropped, a revoke ends open sessions, hostile
names never reach SQL text, and failures are told transient or permanent."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from shared.adapters.databases.servers import Servers
from shared.adapters.postgres.check import check_server
from shared.adapters.postgres.provider import LOGIN_MARKER, PostgresGrants
from shared.adapters.postgres.signin import PasswordEnv
from shared.adapters.postgres.throwaway import ThrowawayPostgres
from shared.cli import main
from shared.domain.errors import AssignmentExists, PermanentError, TransientError
from shared.domain.ledger import GrantKey, marker_for, role_id, role_name
from shared.domain.policy import Policy
from shared.infra_sql import SQL_DIR, setup_script
from tests.postgres import JITGATE_PASSWORD, PgWorld, admin_sql, prepare, start_server

pytestmark = pytest.mark.postgres

SCOPE = "pg-main/payments"
REQUEST = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
LOOK_ALIKE = "p\u0430yments_read"  # a Cyrillic a


def key(provider: PostgresGrants, role: str = "payments_read", principal: str | None = None) -> GrantKey:
    return GrantKey.of("postgres", principal or str(uuid.uuid4()), role_id(role), SCOPE)


def grant(provider: PostgresGrants, k: GrantKey) -> None:
    provider.create_assignment(k, k.assignment_name(), marker_for(REQUEST))


def revoke(provider: PostgresGrants, k: GrantKey) -> None:
    provider.delete_assignment(SCOPE, k.assignment_name())


def logins(world: PgWorld, like: str = "u\\_%") -> list[str]:
    rows = admin_sql(world.servers["pg-main"], f"SELECT rolname FROM pg_roles WHERE rolname LIKE '{like}'")
    return [r[0] for r in rows]


def members(world: PgWorld, login: str) -> list[tuple[str, str]]:
    rows = admin_sql(world.servers["pg-main"],
                     "SELECT r.rolname, g.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
                     "JOIN pg_roles u ON u.oid = m.member JOIN pg_roles g ON g.oid = m.grantor "
                     f"WHERE u.rolname = '{login}' ORDER BY 1")
    return [(r[0], r[1]) for r in rows]


def connect_as(world: PgWorld, login: str, password: str = "user-pw") -> psycopg.Connection:
    pg = world.servers["pg-main"]
    return psycopg.connect(pg.admin.conninfo(dbname="payments", user=login, password=password), autocommit=True)


@pytest.fixture
def provider(pg_world: PgWorld) -> Iterator[PostgresGrants]:
    yield pg_world.provider()


def test_a_role_name_survives_the_lower_cased_grant_key() -> None:
    for name in ["payments_read", "Payments", "a\"b", "x'; DROP ROLE jitgate; --", LOOK_ALIKE, "名前"]:
        assert role_name(GrantKey.of("postgres", "p", role_id(name), "s").role_definition_id) == name


def test_a_membership_someone_else_granted_is_preexisting_and_never_touched(
        pg_world: PgWorld, provider: PostgresGrants) -> None:
    # GIVEN a person whose login already has the role, granted by an admin
    k = key(provider)
    login = pg_world.logins[k.principal_id]
    admin_sql(pg_world.servers["pg-main"], f"CREATE ROLE {login} LOGIN", f"GRANT payments_read TO {login}")
    # THEN jitgate finds it as someone else's, refuses to make its own, and lists nothing as its own
    found = provider.find_assignment(k)
    assert found is not None and found.name != k.assignment_name() and "granted by postgres" in found.description
    with pytest.raises(AssignmentExists) as raised:
        grant(provider, k)
    assert raised.value.existing_name == found.name
    assert provider.list_marked() == []
    # AND a revoke of jitgate's name leaves the admin's membership and login alone
    revoke(provider, k)
    assert members(pg_world, login) == [("payments_read", "postgres")]
    assert logins(pg_world) == [login]


def test_a_login_made_outside_jitgate_is_never_dropped(pg_world: PgWorld, provider: PostgresGrants) -> None:
    k = key(provider)
    login = pg_world.logins[k.principal_id]
    admin_sql(pg_world.servers["pg-main"], f"CREATE ROLE {login} LOGIN")

    grant(provider, k)
    assert members(pg_world, login) == [("payments_read", "jitgate")]
    revoke(provider, k)

    assert members(pg_world, login) == []
    assert logins(pg_world) == [login]


def test_a_login_jitgate_made_is_dropped_only_with_its_last_grant(pg_world: PgWorld, provider: PostgresGrants) -> None:
    # GIVEN two grants on one login jitgate created, marked as jitgate's
    read = key(provider)
    write = key(provider, "payments_write", principal=read.principal_id)
    login = pg_world.logins[read.principal_id]
    grant(provider, read)
    grant(provider, write)
    comment = admin_sql(pg_world.servers["pg-main"],
                        f"SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = '{login}'")
    assert comment == [(LOGIN_MARKER,)]
    # WHEN one ends THEN the login stays for the other
    revoke(provider, read)
    assert logins(pg_world) == [login] and members(pg_world, login) == [("payments_write", "jitgate")]
    # WHEN the last ends THEN the login is gone
    revoke(provider, write)
    assert logins(pg_world) == []


def test_a_login_jitgate_made_that_owns_objects_is_kept_unable_to_log_in(
        pg_world: PgWorld, provider: PostgresGrants) -> None:
    pg = pg_world.servers["pg-main"]
    k = key(provider)
    login = pg_world.logins[k.principal_id]
    grant(provider, k)
    admin_sql(pg, f"CREATE TABLE notes_{login} (x int)", f"ALTER TABLE notes_{login} OWNER TO {login}",
              dbname="payments")

    revoke(provider, k)

    assert admin_sql(pg, f"SELECT rolcanlogin FROM pg_roles WHERE rolname = '{login}'") == [(False,)]
    assert admin_sql(pg, f"SELECT count(*) FROM notes_{login}", dbname="payments") == [(0,)]
    # AND a later grant lets it log in again
    grant(provider, k)
    assert admin_sql(pg, f"SELECT rolcanlogin FROM pg_roles WHERE rolname = '{login}'") == [(True,)]


def test_a_revoke_ends_open_sessions_even_one_that_set_the_role(pg_world: PgWorld, provider: PostgresGrants) -> None:
    # GIVEN a person signed in, acting as the granted role, reading the table
    k = key(provider)
    login = pg_world.logins[k.principal_id]
    grant(provider, k)
    admin_sql(pg_world.servers["pg-main"], f"ALTER ROLE {login} PASSWORD 'user-pw'")
    session = connect_as(pg_world, login)
    session.execute("SET ROLE payments_read")
    assert session.execute("SELECT sum(amount) FROM payments").fetchone() == (49.5,)
    # WHEN the grant is revoked
    revoke(provider, k)
    # THEN that session is over, and a new sign-in fails
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        connect_as(pg_world, login)
    assert admin_sql(pg_world.servers["pg-main"],
                     f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{login}'") == [(0,)]


def test_a_revoke_that_died_after_its_revoke_ends_the_sessions_when_it_runs_again(
        pg_world: PgWorld, provider: PostgresGrants) -> None:
    # GIVEN a session acting as the granted role, and a revoke that got as far as REVOKE before it died
    pg = pg_world.servers["pg-main"]
    k = key(provider)
    login = pg_world.logins[k.principal_id]
    grant(provider, k)
    admin_sql(pg, f"ALTER ROLE {login} PASSWORD 'user-pw'")
    session = connect_as(pg_world, login)
    session.execute("SET ROLE payments_read")
    with psycopg.connect(pg.admin.conninfo(user="jitgate", password=JITGATE_PASSWORD), autocommit=True) as jit:
        jit.execute(f"REVOKE payments_read FROM {login} GRANTED BY CURRENT_USER")
    assert session.execute("SELECT count(*) FROM payments").fetchone() == (2,)  # SET ROLE outlives the REVOKE
    # WHEN the revoke runs again THEN the session ends and the login jitgate made is gone
    revoke(provider, k)
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    assert logins(pg_world) == []


HOSTILE_NAMES = ['pay"ments', "pay'ments", "payments; DROP ROLE jitgate", "payments -- read", LOOK_ALIKE,
                 "Payments Read", "x\\y", "名前"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_role_and_login_names_round_trip(pg_world: PgWorld, name: str) -> None:
    # GIVEN a role and a login with a hostile name, made by an admin
    pg = pg_world.servers["pg-main"]
    quoted = admin_sql(pg, f"SELECT quote_ident($q${name}$q$)")[0][0]
    login_name = f"{name} login"
    quoted_login = admin_sql(pg, f"SELECT quote_ident($q${login_name}$q$)")[0][0]
    admin_sql(pg, f"CREATE ROLE {quoted} NOLOGIN", f"GRANT {quoted} TO jitgate WITH ADMIN OPTION")
    principal = str(uuid.uuid4())
    pg_world.logins.named[principal] = login_name
    provider = pg_world.provider()
    # WHEN jitgate grants and revokes it
    rid = provider.resolve_role(SCOPE, name)
    k = GrantKey.of("postgres", principal, rid, SCOPE)
    grant(provider, k)
    assert members(pg_world, login_name.replace("'", "''")) == [(name, "jitgate")]
    assert [a.key for a in provider.list_marked()] == [k]
    revoke(provider, k)
    # THEN exactly that was made and removed, and jitgate's own login is untouched
    assert admin_sql(pg, f"SELECT count(*) FROM pg_roles WHERE rolname = $q${login_name}$q$") == [(0,)]
    assert admin_sql(pg, "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'jitgate'") == [(True,)]
    assert quoted_login


def test_the_look_alike_of_a_role_is_another_role(pg_world: PgWorld, provider: PostgresGrants) -> None:
    admin_sql(pg_world.servers["pg-main"], f'CREATE ROLE "{LOOK_ALIKE}"',
              f'GRANT "{LOOK_ALIKE}" TO jitgate WITH ADMIN OPTION')
    k = key(provider, LOOK_ALIKE)
    grant(provider, k)
    assert members(pg_world, pg_world.logins[k.principal_id]) == [(LOOK_ALIKE, "jitgate")]


def test_roles_that_differ_only_in_case_are_refused(pg_world: PgWorld, provider: PostgresGrants) -> None:
    admin_sql(pg_world.servers["pg-main"], 'CREATE ROLE "PAYMENTS_READ"')
    with pytest.raises(PermanentError, match="differs only in case"):
        provider.resolve_role(SCOPE, "payments_read")


def test_a_superuser_role_is_never_granted(provider: PostgresGrants) -> None:
    with pytest.raises(PermanentError, match="superuser"):
        provider.resolve_role(SCOPE, "postgres")


def test_a_nul_in_a_name_is_refused_for_good(provider: PostgresGrants) -> None:
    with pytest.raises(PermanentError):
        provider.resolve_role(SCOPE, "payments\x00read")


def test_missing_rights_are_a_permanent_error_naming_the_server_and_what_to_do(pg_world: PgWorld) -> None:
    # GIVEN jitgate signing in as a login without CREATEROLE (42501 insufficient privilege)
    admin_sql(pg_world.servers["pg-main"], f"CREATE ROLE u_weak LOGIN PASSWORD '{JITGATE_PASSWORD}'")
    weak = replace(pg_world.server("pg-main", pg_world.servers["pg-main"]), user="u_weak")
    provider = PostgresGrants(Servers((weak,)), sign_in=lambda server: PasswordEnv("PW", {"PW": JITGATE_PASSWORD}))
    with pytest.raises(PermanentError, match=r"server 'pg-main'.*jitgate databases check"):
        grant(provider, key(provider))


def test_unknown_scopes_and_roles_are_permanent(provider: PostgresGrants) -> None:
    with pytest.raises(PermanentError, match="no PostgreSQL server"):
        provider.resolve_role("pg-nowhere/payments", "payments_read")
    with pytest.raises(PermanentError, match="RoleDefinitionDoesNotExist"):
        grant(provider, key(provider, "no_such_role"))


def test_a_principal_without_a_login_is_refused_with_what_to_do(pg_world: PgWorld) -> None:
    provider = PgWorld(pg_world.servers, logins=type(pg_world.logins)()).provider()
    k = GrantKey.of("postgres", "login:nobody", role_id("payments_read"), SCOPE)
    assert provider.find_assignment(k) is None
    with pytest.raises(PermanentError, match="no login"):
        grant(provider, GrantKey.of("postgres", "not-a-guid", role_id("payments_read"), SCOPE))


def test_a_server_that_goes_away_is_a_transient_error_and_comes_back() -> None:
    pg = start_server()
    try:
        prepare(pg)
        world = PgWorld({"pg-main": pg})
        provider = world.provider()
        k = key(provider)
        grant(provider, k)
        pg.halt()
        with pytest.raises(TransientError, match="pg-main"):
            provider.find_assignment(k)
        with pytest.raises(TransientError):
            revoke(provider, k)
        pg.resume()
        revoke(provider, k)
        assert provider.find_assignment(k) is None
    finally:
        pg.stop()


# ---------------------------------------------------------------- jitgate databases check

CHECK_POLICY = """\
version: 1
groups:
  engineers: ["dddddddd-0000-4000-8000-00000000000d"]
rules:
  - name: read
    match: {providers: [postgres], roles: [payments_read, payments_audit], scopes: ["pg-*/payments"]}
    outcome: auto
    maxDuration: PT1H
  - name: never
    match: {providers: [postgres], roles: [postgres], scopes: ["**"]}
    outcome: deny
    reason: never
"""


def test_databases_check_names_what_is_missing_and_its_fixes_work(
        pg_world: PgWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN jitgate signing in as a login that has none of the rights it needs
    pg = pg_world.servers["pg-main"]
    admin_sql(pg, f"CREATE ROLE u_weak LOGIN PASSWORD '{JITGATE_PASSWORD}'")
    secret = tmp_path / "pw"
    secret.write_text(JITGATE_PASSWORD)
    servers = tmp_path / "servers.yaml"
    servers.write_text(pg_world.servers_yaml("pg-main", str(secret), {}).replace("user: jitgate", "user: u_weak"))
    policy = tmp_path / "policy.yaml"
    policy.write_text(CHECK_POLICY)
    # WHEN checked THEN every missing right is named with the statement that gives it, and the check fails
    assert main(["databases", "check", "--servers", str(servers), "--policy", str(policy)]) == 1
    out = capsys.readouterr().out
    fixes = [line.split("fix: ", 1)[1] for line in out.splitlines() if "fix: " in line]
    assert fixes == ["ALTER ROLE u_weak CREATEROLE;", "GRANT pg_signal_backend TO u_weak;",
                     "CREATE ROLE payments_audit NOLOGIN;", "GRANT payments_read TO u_weak WITH ADMIN OPTION;"]
    assert "FAIL has ADMIN OPTION on role payments_read" in out
    # WHEN an admin runs them (the role first) THEN the check passes
    admin_sql(pg, fixes[2], *fixes[:2], fixes[3], "GRANT payments_audit TO u_weak WITH ADMIN OPTION")
    assert main(["databases", "check", "--servers", str(servers), "--policy", str(policy)]) == 0
    assert "FAIL" not in capsys.readouterr().out


def test_databases_check_says_when_it_cannot_sign_in(pg_world: PgWorld, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "pw"
    secret.write_text("wrong password")
    servers = tmp_path / "servers.yaml"
    servers.write_text(pg_world.servers_yaml("pg-main", str(secret), {}))
    policy = tmp_path / "policy.yaml"
    policy.write_text(CHECK_POLICY)

    assert main(["databases", "check", "--servers", str(servers), "--policy", str(policy)]) == 1
    out = capsys.readouterr().out
    assert "FAIL cannot sign in" in out and "password authentication failed" in out


# ---------------------------------------------------------------- Azure and Cloud SQL logins

STAND_IN = """\
CREATE TABLE IF NOT EXISTS pgaadauth_calls (role_name text, object_id text, object_type text, is_admin boolean,
                                            is_mfa boolean);
GRANT INSERT ON pgaadauth_calls TO jitgate;
CREATE OR REPLACE FUNCTION pgaadauth_create_principal_with_oid(role_name text, object_id text, object_type text,
                                                               is_admin boolean, is_mfa boolean) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pgaadauth_calls VALUES (role_name, object_id, object_type, is_admin, is_mfa);
    EXECUTE format('CREATE ROLE %I LOGIN', role_name);
    RETURN 'Created role for ' || role_name;
END $$;
"""


def on_platform(world: PgWorld, platform: str) -> PostgresGrants:
    """The provider with pg-main presented as an Azure or Cloud SQL server (signing in with a password)."""
    server = replace(world.server("pg-main", world.servers["pg-main"]), platform=platform)
    return PostgresGrants(Servers((server,)), sign_in=lambda s: PasswordEnv("PW", {"PW": JITGATE_PASSWORD}))


def test_on_azure_the_login_is_an_entra_principal_created_with_its_object_id(pg_world: PgWorld) -> None:
    # GIVEN a stand-in of Azure's pgaadauth_create_principal_with_oid (it records its arguments)
    pg = pg_world.servers["pg-main"]
    admin_sql(pg, STAND_IN, dbname="payments")
    provider = on_platform(pg_world, "azure")
    user, group = key(provider), key(provider)
    # WHEN a user and a group are granted
    provider.create_assignment(user, user.assignment_name(), marker_for(REQUEST), "User")
    provider.create_assignment(group, group.assignment_name(), marker_for(REQUEST), "Group")
    # THEN each login was made by the function, bound to the object id with its kind, and is jitgate's
    calls = admin_sql(pg, "SELECT * FROM pgaadauth_calls ORDER BY 3 DESC", dbname="payments")
    assert calls == [(pg_world.logins[user.principal_id], user.principal_id, "user", False, False),
                     (pg_world.logins[group.principal_id], group.principal_id, "group", False, False)]
    assert members(pg_world, pg_world.logins[user.principal_id]) == [("payments_read", "jitgate")]
    provider.delete_assignment(SCOPE, user.assignment_name())
    assert pg_world.logins[user.principal_id] not in logins(pg_world)
    # AND a principal type Azure has no login kind for is refused before anything is made
    other = key(provider)
    with pytest.raises(PermanentError, match="UnmatchedPrincipalType"):
        provider.create_assignment(other, other.assignment_name(), marker_for(REQUEST), "Device")
    assert pg_world.logins[other.principal_id] not in logins(pg_world)


def test_on_cloud_sql_jitgate_grants_to_iam_users_but_never_creates_them(pg_world: PgWorld) -> None:
    provider = on_platform(pg_world, "cloud-sql")
    missing, present = key(provider), key(provider)
    with pytest.raises(PermanentError, match="gcloud sql users create"):
        grant(provider, missing)
    login = pg_world.logins[present.principal_id]
    admin_sql(pg_world.servers["pg-main"], f"CREATE ROLE {login} LOGIN")
    grant(provider, present)
    revoke(provider, present)
    assert logins(pg_world) == [login]


SETUP_POLICY = """\
version: 1
groups:
  engineers: [dddddddd-0000-4000-8000-00000000000d]
rules:
  - name: pg-main-roles
    match:
      providers: [postgres]
      roles: [payments_read, 'Payments "Audit"']
      scopes: [pg-main/payments]
      requesterGroups: [engineers]
    outcome: auto
    maxDuration: PT1H
"""


def psql(pg: ThrowawayPostgres, *args: str) -> subprocess.CompletedProcess[str]:
    assert pg.bin is not None
    command = [str(pg.bin / "psql"), "-X", "-q", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
               "-d", "payments", *args]
    return subprocess.run(command, env={**os.environ, "PGPASSWORD": pg.admin.password}, capture_output=True,
                          text=True, timeout=60, check=False)


def test_the_setup_script_jitgate_prints_gives_it_every_right_the_check_asks_for(tmp_path: Path) -> None:
    # GIVEN a fresh server with the roles an application team made (one with a quote and capitals), and nothing
    # for jitgate
    pg = start_server()
    try:
        pg.sql("CREATE DATABASE payments")
        pg.sql("CREATE ROLE payments_read NOLOGIN", 'CREATE ROLE "Payments ""Audit""" NOLOGIN')
        server = PgWorld({"pg-main": pg}).server("pg-main", pg)
        # WHEN an admin runs what `jitgate infra sql` prints for it, as its header says
        script = tmp_path / "setup.sql"
        script.write_text(setup_script(server, Policy.from_text(SETUP_POLICY)))
        run = psql(pg, "-v", f"jitgate_password={JITGATE_PASSWORD}", "-f", str(script))
        assert run.returncode == 0, run.stderr
        # THEN jitgate's check passes for the roles the policy grants there, and for nothing else
        findings = check_server(server, ['Payments "Audit"', "payments_read"],
                                sign_in=lambda s: PasswordEnv("PW", {"PW": JITGATE_PASSWORD}))
        assert [f.what for f in findings if not f.ok] == []
        assert len(findings) == 5
        # AND a second run changes nothing and fails nothing (the login exists)
        assert psql(pg, "-v", f"jitgate_password={JITGATE_PASSWORD}", "-f", str(script)).returncode == 0
        # AND without the password, or run as the bare template, it stops at once, saying why
        refused = psql(pg, "-f", str(script))
        assert refused.returncode != 0 and "psql -v jitgate_password" in refused.stderr
        bare = psql(pg, "-v", "jitgate_password=x", "-f", str(SQL_DIR / "postgres-setup.sql"))
        assert bare.returncode != 0 and "jitgate_user is not set" in bare.stderr
    finally:
        pg.stop()


def test_the_azure_setup_script_binds_jitgate_to_its_identity_without_making_it_an_entra_admin(
        tmp_path: Path) -> None:
    # GIVEN a server with Azure's pgaadauth_create_principal_with_oid stood in for
    pg = start_server()
    try:
        pg.sql("CREATE DATABASE payments")
        pg.sql("CREATE ROLE payments_read NOLOGIN", 'CREATE ROLE "Payments ""Audit""" NOLOGIN', "CREATE ROLE jitgate")
        pg.sql(STAND_IN, dbname="payments")
        server = replace(PgWorld({"pg-main": pg}).server("pg-main", pg), platform="azure", user="jitgate-identity",
                         password_env=None)
        oid = "7d3b2a10-5c4e-4f6a-8b9c-0d1e2f3a4b5c"
        # WHEN the admin runs what `jitgate infra sql` prints, with its security label printed, not applied (a
        # plain PostgreSQL has no pgaadauth label provider)
        text = setup_script(server, Policy.from_text(SETUP_POLICY), oid)
        script = tmp_path / "setup.sql"
        script.write_text(text.replace("',type=service,admin') \\gexec", "',type=service,admin') \\g"))
        run = psql(pg, "-A", "-t", "-f", str(script))
        assert run.returncode == 0, run.stderr
        # THEN the login was made by Azure's function as a service principal, not an administrator
        calls = pg.sql("SELECT * FROM pgaadauth_calls", dbname="payments")
        assert calls == [("jitgate-identity", oid, "service", False, False)]
        # AND it may create logins, end sessions and grant exactly the policy's roles
        rights = pg.sql("SELECT rolcreaterole, rolcreatedb, rolsuper, pg_has_role('jitgate-identity', "
                        "'pg_signal_backend', 'MEMBER') FROM pg_roles WHERE rolname = 'jitgate-identity'")
        assert rights == [(True, False, False, True)]
        admin = pg.sql("SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u "
                       "ON u.oid = m.member WHERE u.rolname = 'jitgate-identity' AND m.admin_option ORDER BY 1")
        assert admin == [('Payments "Audit"',), ("payments_read",)]
        # AND the label that lets it manage Entra logins names its object id
        assert (f'SECURITY LABEL FOR "pgaadauth" ON ROLE "jitgate-identity" IS '
                f"'aadauth,oid={oid},type=service,admin'") in run.stdout
    finally:
        pg.stop()
