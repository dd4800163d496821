"""The whole lifecycle on Google Cloud grants, in the embedded runtime (SQLite bus and store, the real worker and
reconcile): a Google role through `gcp-iam` against the IAM fake, and a Cloud SQL database through both of its
layers, the IAM fake and the real PostgreSQL the `postgres` tests start. Real time: grants last seconds."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from shared.adapters.databases.servers import Server, Servers
from shared.adapters.gcp.cloudsql import CloudSqlGrants
from shared.adapters.gcp.grants import gcp_grant_providers
from shared.adapters.gcp.iam import GRANT_TITLE, GcpIam, expiry_expression
from shared.adapters.postgres.provider import PostgresGrants
from shared.adapters.postgres.signin import PasswordEnv
from shared.domain.errors import PermanentError
from shared.domain.ledger import GrantKey, marker_for
from shared.runtime import Runtime, build_local
from shared.settings import Settings
from shared.worker import Worker
from tests.gcp.fake_iam import TOKEN, World, shared_iam
from tests.postgres import JITGATE_PASSWORD, PgWorld, admin_sql

pytestmark = pytest.mark.gcp

PROJECT = "projects/jitgate-payments"
DATABASE = f"{PROJECT}/instances/payments-pg/databases/payments"
BUCKET = "projects/_/buckets/jitgate-payments-exports"
JANE = "user:jane@example.com"
ALICE = "aaaaaaaa-0000-4000-8000-00000000000a"
POLICY = f"""
version: 1
groups:
  approvers: ["{ALICE}"]
  # NB. As for Microsoft Graph in Azure, the policy file lists the group for the local directory; with
  # JITGATE_GCP_GROUPS the Google group's members count instead.
  google-approvers: ["user:someone-local@example.com"]
  google-engineers: ["{JANE}", "serviceAccount:deploy@jitgate-payments.iam.gserviceaccount.com"]
rules:
  - name: google-viewer
    match: {{providers: [gcp-iam], roles: [roles/viewer, roles/browser], scopes: ["{PROJECT}"],
             requesterGroups: [google-engineers]}}
    outcome: auto
    maxDuration: PT1H
  - name: google-editor
    match: {{providers: [gcp-iam], roles: [roles/editor], scopes: ["{PROJECT}"]}}
    outcome: approval
    approval: {{groups: [google-approvers]}}
    maxDuration: PT1H
  - name: exports-read
    match: {{providers: [gcp-iam], roles: [roles/storage.objectViewer], scopes: ["projects/_/buckets/jitgate-*"]}}
    outcome: auto
    maxDuration: PT1H
  - name: payments-read
    match: {{providers: [postgres], roles: [payments_read], scopes: ["{DATABASE}"]}}
    outcome: auto
    maxDuration: PT1H
"""


@dataclass
class Gcp:
    runtime: Runtime
    worker: Worker
    world: World

    def submit(self, target: dict[str, str], duration: str, principal: str = JANE,
               principal_type: str = "GoogleUser") -> str:
        request_id = str(uuid.uuid4())
        body = {"schemaVersion": 1, "requestId": request_id,
                "requester": {"principalId": principal, "principalType": principal_type, "displayName": "Jane Doe"},
                "target": target, "duration": duration, "justification": "Chase the double charges of INC-4711"}
        self.runtime.lifecycle.submit(json.dumps(body).encode())
        self.worker.drain()
        return request_id

    def state(self, request_id: str) -> str:
        record = self.runtime.requests.get_request(request_id)
        assert record is not None
        return record.state.value

    def events(self, request_id: str) -> list[str]:
        return [e.type.value for e in self.runtime.audit.chain(request_id)]

    def until(self, request_id: str, state: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.state(request_id) != state:
            assert time.monotonic() < deadline, f"{request_id} is {self.state(request_id)}, not {state}"
            time.sleep(0.1)
            self.worker.drain()

    def bindings(self) -> list[dict[str, Any]]:
        return shared_iam().bindings(self.world, PROJECT)


@pytest.fixture
def gcp(tmp_path: Path) -> Iterator[Gcp]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    settings = Settings(data_dir=tmp_path / "data", policy_path=policy, workers=0, providers=("gcp-iam",),
                        gcp_grant_scopes=(PROJECT, BUCKET))
    runtime = build_local(settings)
    world, base = shared_iam().new_world(PROJECT, BUCKET)
    runtime.backends.providers = gcp_grant_providers(settings, runtime.backends.providers, token=lambda: TOKEN,
                                                     resource_manager_url=base, iam_url=base, storage_url=base)
    worker = Worker(runtime.lifecycle, runtime.bus, settings.requests_queue, settings.lifecycle_queue,
                    settings.max_delivery_count, reconcile_every=3600)
    yield Gcp(runtime, worker, world)


VIEWER = {"provider": "gcp-iam", "scope": PROJECT, "role": "roles/viewer"}


def test_a_google_role_is_granted_ends_by_itself_and_is_removed_at_expiry(gcp: Gcp) -> None:
    fake = shared_iam()
    # GIVEN Jane, a Google user in the policy's google-engineers, asks to view the project for three seconds
    request_id = gcp.submit(VIEWER, "PT3S")
    # THEN she holds the role through one conditional binding that ends when her request does
    assert gcp.state(request_id) == "active"
    [binding] = gcp.bindings()
    assert binding["members"] == [JANE] and binding["condition"]["title"].startswith(GRANT_TITLE)
    record = gcp.runtime.requests.get_request(request_id)
    assert record is not None and record.expires_at is not None
    assert binding["condition"]["expression"] == expiry_expression(record.expires_at)
    assert fake.has_access(gcp.world, PROJECT, "roles/viewer", JANE, datetime.now(UTC))
    assert not fake.has_access(gcp.world, PROJECT, "roles/viewer", JANE, record.expires_at)
    # WHEN its time comes THEN jitgate revokes it and the binding is gone from the policy, read back
    gcp.until(request_id, "revoked")
    assert gcp.bindings() == []
    assert [e for e in gcp.events(request_id) if e.startswith("grant.")] == ["grant.applied", "grant.revoked"]


def test_a_role_on_a_cloud_storage_bucket_goes_through_the_lifecycle(gcp: Gcp) -> None:
    fake = shared_iam()
    request_id = gcp.submit({"provider": "gcp-iam", "scope": BUCKET, "role": "roles/storage.objectViewer"}, "PT2S")
    assert gcp.state(request_id) == "active"
    assert fake.has_access(gcp.world, BUCKET, "roles/storage.objectViewer", JANE, datetime.now(UTC))
    gcp.until(request_id, "revoked")
    assert fake.bindings(gcp.world, BUCKET) == []


def test_a_google_principal_outside_the_requester_groups_is_not_granted(gcp: Gcp) -> None:
    request_id = gcp.submit(VIEWER, "PT1M", principal="user:mallory@example.com")
    assert gcp.state(request_id) == "rejected"
    assert gcp.bindings() == []


def test_an_unconditional_binding_is_a_preexisting_hold_and_outlives_the_request(gcp: Gcp) -> None:
    fake = shared_iam()
    fake.seed(gcp.world, PROJECT, "roles/viewer", JANE)
    request_id = gcp.submit(VIEWER, "PT2S")
    assert gcp.state(request_id) == "active"
    [hold] = gcp.runtime.backends.ledger.holds_for_request(request_id)
    assert hold.preexisting
    gcp.until(request_id, "revoked")
    assert gcp.bindings() == [{"role": "roles/viewer", "members": [JANE]}]


def test_reconcile_removes_jitgate_bindings_that_piled_up(gcp: Gcp) -> None:
    # GIVEN a binding jitgate made long ago that nothing holds any more, expired and left in the policy
    fake = shared_iam()
    name = str(uuid.uuid4())
    fake.seed(gcp.world, PROJECT, "roles/browser", "user:old@example.com",
              {"title": GRANT_TITLE + name, "description": "jitgate:9b4e28ba-2fa1-11d2-883f-0016d3cca427 (time-boxed)",
               "expression": expiry_expression(datetime.now(UTC) - timedelta(days=30))})
    # WHEN reconcile runs THEN it is removed and audited
    report = gcp.runtime.lifecycle.reconcile()
    assert report.orphans_removed and gcp.bindings() == []


def test_a_google_group_approves_a_google_principals_request(gcp: Gcp) -> None:
    from shared.adapters.gcp.cloudidentity import CloudIdentityDirectory
    from shared.domain.errors import AuthError
    from tests.gcp.fake_cloudidentity import FakeCloudIdentity

    # GIVEN the policy's google-approvers are a Google group: Carol through a nested group, and Jane herself
    server = FakeCloudIdentity()
    server.group("oncall1", "oncall@example.com", ("USER", "carol@example.com"))
    approvers = server.group("approvers1", "approvers@example.com", ("GROUP", "oncall@example.com"),
                             ("USER", "jane@example.com"))
    gcp.runtime.backends.directory = CloudIdentityDirectory(
        lambda: TOKEN, {"google-approvers": approvers}, gcp.runtime.backends.directory, base_url=server.url)
    try:
        # WHEN Jane asks to edit the project THEN it waits for an approver
        request_id = gcp.submit({"provider": "gcp-iam", "scope": PROJECT, "role": "roles/editor"}, "PT1M")
        assert gcp.state(request_id) == "pending_approval"
        # AND she cannot approve it herself, though she is in the group
        with pytest.raises(AuthError):
            gcp.runtime.lifecycle.approve(request_id, JANE)
        # WHEN Carol approves THEN Jane holds the role, until a minute from now
        gcp.runtime.lifecycle.approve(request_id, "user:carol@example.com")
        gcp.worker.drain()
        assert gcp.state(request_id) == "active"
        assert [b["role"] for b in gcp.bindings()] == ["roles/editor"]
    finally:
        server.close()


# ---------------------------------------------------------------- Cloud SQL: both layers, one hold


@pytest.fixture
def cloud_sql(gcp: Gcp, pg_world: PgWorld) -> Iterator[tuple[Gcp, Any]]:
    pg = pg_world.servers["pg-main"]
    server = Server(name="payments-pg", platform="cloud-sql", host="127.0.0.1", port=pg.port, database="payments",
                    user="jitgate", scope=DATABASE, line=1, password_env="JITGATE_TEST_PG")
    env = {"JITGATE_TEST_PG": JITGATE_PASSWORD}
    database = PostgresGrants(Servers((server,), "servers.yaml"), sign_in=lambda s: PasswordEnv("JITGATE_TEST_PG", env))
    iam = gcp.runtime.backends.providers["gcp-iam"]
    assert isinstance(iam, GcpIam)
    gcp.runtime.backends.providers = {**gcp.runtime.backends.providers, "postgres": CloudSqlGrants(database, iam)}
    # Cloud SQL's IAM database user for Jane, as `gcloud sql users create --type=cloud_iam_user` leaves it
    admin_sql(pg, "CREATE ROLE \"jane@example.com\" LOGIN PASSWORD 'jane-pw'")
    yield gcp, pg


PAYMENTS = {"provider": "postgres", "scope": DATABASE, "role": "payments_read"}


def sign_in_roles(gcp: Gcp) -> list[tuple[str, str]]:
    return sorted((b["role"], b["members"][0]) for b in gcp.bindings())


@pytest.mark.postgres
def test_a_cloud_sql_database_is_granted_in_both_layers_and_revoked_in_both(cloud_sql: tuple[Gcp, Any]) -> None:
    gcp, pg = cloud_sql
    # GIVEN Jane asks to read the payments database on Cloud SQL for three seconds
    request_id = gcp.submit(PAYMENTS, "PT3S")
    # THEN one hold stands on two layers: IAM lets her sign in until expiry, and the database role lets her read
    assert gcp.state(request_id) == "active"
    assert len(gcp.runtime.backends.ledger.holds_for_request(request_id)) == 1
    assert sign_in_roles(gcp) == [("roles/cloudsql.client", JANE), ("roles/cloudsql.instanceUser", JANE)]
    session = psycopg.connect(pg.admin.conninfo(dbname="payments", user="jane@example.com", password="jane-pw"),
                              autocommit=True)
    assert session.execute("SELECT sum(amount) FROM payments").fetchone() == (49.5,)
    # WHEN it expires THEN both layers are gone and her open session ended
    gcp.until(request_id, "revoked")
    assert gcp.bindings() == []
    assert admin_sql(pg, "SELECT count(*) FROM pg_auth_members m JOIN pg_roles u ON u.oid = m.member "
                         "WHERE u.rolname = 'jane@example.com'") == [(0,)]
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")


@pytest.mark.postgres
def test_a_failed_database_step_takes_the_iam_layer_back(cloud_sql: tuple[Gcp, Any]) -> None:
    gcp, _ = cloud_sql
    postgres = gcp.runtime.backends.providers["postgres"]
    # GIVEN Bob, whose Cloud SQL IAM database user was never made (jitgate cannot make one)
    key = GrantKey.of("postgres", "user:bob@example.com", "payments_read", DATABASE)
    # WHEN the grant is tried THEN the database step fails and the IAM bindings it made first are gone again
    with pytest.raises(PermanentError, match="does not exist on Cloud SQL"):
        postgres.create_assignment(key, key.assignment_name(), marker_for(str(uuid.uuid4())), "GoogleUser",
                                   datetime.now(UTC) + timedelta(hours=1))
    assert gcp.bindings() == []
    assert len(_writes(gcp)) == 2, "the layer was never put: the rollback was not tested"
    # AND through the lifecycle the request fails with nothing left
    request_id = gcp.submit(PAYMENTS, "PT1M", principal="user:bob@example.com")
    assert gcp.state(request_id) == "failed"
    assert gcp.bindings() == []


@pytest.mark.postgres
def test_a_database_role_held_outside_jitgate_is_preexisting_and_gets_no_iam_layer(cloud_sql: tuple[Gcp, Any]) -> None:
    gcp, pg = cloud_sql
    # GIVEN an admin gave Jane the role by hand
    admin_sql(pg, 'GRANT payments_read TO "jane@example.com"')
    # WHEN she asks for it THEN the hold is preexisting, and jitgate writes no IAM binding for it
    request_id = gcp.submit(PAYMENTS, "PT2S")
    assert gcp.state(request_id) == "active"
    [hold] = gcp.runtime.backends.ledger.holds_for_request(request_id)
    assert hold.preexisting
    assert gcp.bindings() == [] and _writes(gcp) == []
    # AND at expiry her own membership stays
    gcp.until(request_id, "revoked")
    assert admin_sql(pg, "SELECT count(*) FROM pg_auth_members m JOIN pg_roles u ON u.oid = m.member "
                         "WHERE u.rolname = 'jane@example.com'") == [(1,)]


@pytest.mark.postgres
def test_reconcile_sweeps_a_cloud_sql_layer_left_past_its_expiry(cloud_sql: tuple[Gcp, Any]) -> None:
    gcp, _ = cloud_sql
    postgres = gcp.runtime.backends.providers["postgres"]
    assert isinstance(postgres, CloudSqlGrants)
    postgres.iam.put_titled(PROJECT, "jitgate-sql:left-by-a-crash", JANE, ["roles/cloudsql.instanceUser"],
                            "jitgate:crashed", datetime.now(UTC) - timedelta(minutes=1))
    gcp.runtime.lifecycle.reconcile()
    assert gcp.bindings() == []


def _writes(gcp: Gcp) -> list[Any]:
    world = next(n for n, w in shared_iam().worlds.items() if w is gcp.world)
    return [c for c in shared_iam().calls_to("POST", r":setIamPolicy$") if c.path.startswith(f"/w{world}/")]


# ---------------------------------------------------------------- wiring from settings


def test_settings_serve_gcp_iam_and_give_cloud_sql_its_iam_layer(tmp_path: Path) -> None:
    servers = tmp_path / "servers.yaml"
    servers.write_text("version: 1\nservers:\n  - name: payments-gcp\n    platform: cloud-sql\n"
                       "    instance: projects/jitgate-payments/instances/payments-pg\n    host: 10.20.0.3\n"
                       "    database: payments\n    user: jitgate@jitgate-payments.iam\n")
    env = {"JITGATE_DATA_DIR": str(tmp_path / "data"), "JITGATE_PROVIDERS": "gcp-iam",
           "JITGATE_GCP_GRANT_SCOPES": f"{PROJECT},folders/1234", "JITGATE_DATABASES_FILE": str(servers)}
    runtime = build_local(Settings.from_env(env))
    providers = runtime.backends.providers
    assert isinstance(providers["gcp-iam"], GcpIam)
    assert providers["gcp-iam"].target_scopes == (PROJECT, "folders/1234")
    assert isinstance(providers["postgres"], CloudSqlGrants) and providers["postgres"].iam is providers["gcp-iam"]


def test_bad_google_settings_are_named() -> None:
    from shared.settings import SettingsError

    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"JITGATE_GCP_GRANT_SCOPES": "projects/Payments", "JITGATE_GCP_GROUPS": "approvers=ops"})
    assert raised.value.problems == [
        "JITGATE_GCP_GRANT_SCOPES: 'projects/Payments' is not projects/<id>, folders/<number>, "
        "organizations/<number> or projects/_/buckets/<bucket>",
        "JITGATE_GCP_GROUPS: 'ops' is not a Cloud Identity group name (groups/<id>)",
    ]


def test_google_callers_take_a_google_role_through_the_api_in_gcp_mode(gcp: Gcp) -> None:
    from fastapi.testclient import TestClient

    from shared.api import create_app
    from tests.gcp.google_tokens import AUDIENCE, GoogleCerts, GoogleSigner

    signer = GoogleSigner("google-key-1")
    certs = GoogleCerts(signer)
    settings = replace(gcp.runtime.settings, mode="gcp", gcp_api_audiences=(AUDIENCE,), gcp_certs_url=certs.certs_url)
    api = TestClient(create_app(replace(gcp.runtime, settings=settings)), base_url="https://jitgate.example.com")
    jane, approver = ({"Authorization": f"Bearer {signer.token(email)}"}
                      for email in ("jane@example.com", "someone-local@example.com"))
    try:
        # GIVEN Jane, signed in with Google, asking for roles/editor, which the policy's google-approvers approve
        request_id = str(uuid.uuid4())
        body = {"schemaVersion": 1, "requestId": request_id,
                "requester": {"principalId": JANE, "principalType": "GoogleUser", "displayName": "Jane Doe"},
                "target": {"provider": "gcp-iam", "scope": PROJECT, "role": "roles/editor"}, "duration": "PT10M",
                "justification": "Fix the payments deployment for INC-4711"}
        assert api.post("/api/access-requests", json=body, headers=jane).status_code == 202
        gcp.worker.drain()
        assert api.get(f"/api/access-requests/{request_id}", headers=jane).json()["state"] == "pending_approval"
        # WHEN an approver of that group, by their Google identity, approves from the pages' API
        answer = api.post(f"/api/access-requests/{request_id}/approve", json={}, headers=approver)
        assert answer.status_code == 200, answer.text
        gcp.worker.drain()
        # THEN Jane holds the role through a conditional binding
        assert gcp.state(request_id) == "active"
        assert [b["members"] for b in gcp.bindings()] == [[JANE]]
        # AND when she says she is done, the binding is gone
        answer = api.post(f"/api/access-requests/{request_id}/revoke", json={"reason": "fixed"}, headers=jane)
        assert answer.status_code < 300, answer.text
        gcp.until(request_id, "revoked")
        assert gcp.bindings() == []
    finally:
        api.close()
        certs.close()


def test_the_api_in_gcp_mode_names_a_missing_audience_or_an_unknown_role_group_at_start(gcp: Gcp) -> None:
    from shared.api import create_app
    from shared.settings import SettingsError

    def start(**settings: Any) -> None:
        create_app(replace(gcp.runtime, settings=replace(gcp.runtime.settings, mode="gcp", **settings)))

    with pytest.raises(SettingsError, match="JITGATE_GCP_API_AUDIENCE is required"):
        start()
    with pytest.raises(SettingsError, match="JITGATE_GCP_ROLES: group:auditor is not a group of the policy"):
        start(gcp_api_audiences=("https://api.example.com",), gcp_roles=(("Jit.Auditor", "group:auditor"),))
    start(gcp_api_audiences=("https://api.example.com",), gcp_roles=(("Jit.Auditor", "group:google-approvers"),))
