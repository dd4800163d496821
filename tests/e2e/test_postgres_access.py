"""End to end against a real PostgreSQL: a `jitgate serve` process with a servers file, a person who asks
to read the payments database, signs in, reads, and is thrown out at expiry; every step in the audit trail.

The login jitgate creates on a self-managed server has no password (how people authenticate is the server's
pg_hba business: certificates, LDAP, Kerberos); here the test, as the database admin, sets one out of band
once the grant is active, as the demo does."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import JANE, JitgateServer, running_server
from tests.postgres import JITGATE_PASSWORD, PgWorld, admin_sql

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

SCOPE = "payments-primary/payments"


def request_body(duration: str) -> dict[str, Any]:
    return {
        "schemaVersion": 1,
        "requestId": str(uuid.uuid4()),
        "requester": {"principalId": JANE, "principalType": "User", "displayName": "Jane Doe",
                      "email": "jane@example.com"},
        "target": {"provider": "postgres", "scope": SCOPE, "role": "payments_read"},
        "duration": duration,
        "justification": "Chase the double charges of INC-4711 in the payments table",
        "ticket": "INC-4711",
    }


def submit(server: JitgateServer, body: dict[str, Any]) -> None:
    with server.client(JANE) as c:
        response = c.post("/api/access-requests", content=json.dumps(body).encode(),
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 202, response.text


def jane(pg_world: PgWorld) -> psycopg.Connection:
    pg = pg_world.servers["pg-main"]
    return psycopg.connect(pg.admin.conninfo(dbname="payments", user="jane", password="jane-pw"), autocommit=True)


def serve(tmp_path: Path, pg_world: PgWorld) -> Any:
    secret = tmp_path / "jitgate-pg-password"
    secret.write_text(JITGATE_PASSWORD)
    servers = tmp_path / "servers.yaml"
    servers.write_text(pg_world.servers_yaml("pg-main", str(secret), {JANE: "jane"})
                       .replace("name: pg-main", "name: payments-primary"))
    return running_server(tmp_path, JITGATE_DATABASES_FILE=str(servers))


def test_read_the_payments_database_until_expiry(tmp_path: Path, pg_world: PgWorld) -> None:
    pg = pg_world.servers["pg-main"]
    with serve(tmp_path, pg_world) as server:
        # GIVEN jane asks to read the payments database for a few seconds, and the policy auto-approves it
        body = request_body("PT4S")
        submit(server, body)
        active = server.wait_state(body["requestId"], "active", timeout=20)
        hold = active["holds"][0]
        assert (hold["provider"], hold["scope"], hold["preexisting"]) == ("postgres", SCOPE, False)
        # WHEN she signs in (the admin gave the login jitgate made a password) and reads
        admin_sql(pg, "ALTER ROLE jane PASSWORD 'jane-pw'")
        session = jane(pg_world)
        assert session.execute("SELECT sum(amount) FROM payments").fetchone() == (49.5,)
        # THEN at expiry her open session is ended and she cannot sign in again
        server.wait_state(body["requestId"], "revoked", timeout=20)
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            jane(pg_world)
        assert admin_sql(pg, "SELECT count(*) FROM pg_roles WHERE rolname = 'jane'") == [(0,)]
        # AND the audit trail tells each step
        types = [e["type"] for e in server.events(body["requestId"])]
        for step in ("request.received", "policy.evaluated", "request.approved", "grant.applied",
                     "revoke.scheduled", "grant.revoked"):
            assert step in types, f"{step} missing from {types}"
        assert types.index("grant.applied") < types.index("grant.revoked")
        revoked = server.events(body["requestId"], "grant.revoked")[0]
        assert revoked["data"]["assignmentDeleted"] is True


def test_membership_she_already_had_is_left_alone(tmp_path: Path, pg_world: PgWorld) -> None:
    pg = pg_world.servers["pg-main"]
    admin_sql(pg, "CREATE ROLE jane LOGIN PASSWORD 'jane-pw'", "GRANT payments_read TO jane")
    with serve(tmp_path, pg_world) as server:
        body = request_body("PT2S")
        submit(server, body)
        active = server.wait_state(body["requestId"], "active", timeout=20)
        assert active["holds"][0]["preexisting"] is True
        server.wait_state(body["requestId"], "revoked", timeout=20)
        time.sleep(0.5)
    rows = admin_sql(pg, "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles u ON u.oid = m.member "
                         "JOIN pg_roles g ON g.oid = m.grantor WHERE u.rolname = 'jane'")
    assert rows == [("postgres",)]
    assert jane(pg_world).execute("SELECT count(*) FROM payments").fetchone() == (2,)
