"""Cloud SQL for PostgreSQL through both of its layers, as one grant of the `postgres` provider.

To read a Cloud SQL database a person needs two things: the IAM roles that let them sign in to the instance
(`roles/cloudsql.instanceUser`, and `roles/cloudsql.client` to connect through the Cloud SQL connectors), and
membership in a database role. One request gets both, under one hold of the `postgres` grant key:

- grant: the IAM layer first (conditional bindings on the instance's project, ending at the hold's expiry, titled
  `jitgate-sql:<name>` so that gcp-iam's reconcile never takes them for its own orphans), then the database role
  (`PostgresGrants`). A failure of the database step removes the IAM bindings this call made, so nothing is left
  half granted; a later hold on the same key moves the IAM expiry out. Both layers are read back.
- revoke: the database role first (its sessions are ended), then the IAM bindings, each read back.
- reconcile: the database memberships as `postgres` reports them; IAM layers whose condition has expired are swept
  from the projects (a layer left behind by a crash grants nothing after its expiry, and is removed then).

The IAM member is the requester's Google principal (`user:`, `serviceAccount:`), or for an Entra principal the
login the servers file names (an e-mail address; one ending in `.iam` is a service account). A membership that
exists outside jitgate is preexisting: the IAM layer made for it is taken back.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from ...domain.errors import AssignmentExists, PermanentError
from ...domain.ids import JITGATE_NAMESPACE
from ...domain.ledger import Assignment, GrantKey
from ..databases.servers import Server
from ..postgres.provider import PostgresGrants
from .iam import CLOUD_SQL_ROLES, LAYER_TITLE, GcpIam, member_of

log = logging.getLogger("jitgate.gcp")

def layer_title(key: GrantKey) -> str:
    """The title of the IAM bindings that stand beside a Cloud SQL grant key's database membership."""
    normal = GrantKey.of(key.provider, key.principal_id, key.role_definition_id, key.scope)
    return LAYER_TITLE + str(uuid.uuid5(JITGATE_NAMESPACE, "cloud-sql|" + "|".join(normal.as_dict().values())))


def project_of(server: Server) -> str:
    """`projects/<id>` of a Cloud SQL server entry (its scope is projects/<p>/instances/<i>/databases/<db>)."""
    return "/".join(server.scope.split("/")[:2])


class CloudSqlGrants:
    """GrantProvider `postgres` with the IAM layer on Cloud SQL servers (see the module docstring); servers of
    other platforms are served by `database` alone."""

    name: str = "postgres"

    def __init__(self, database: PostgresGrants, iam: GcpIam, roles: Sequence[str] = CLOUD_SQL_ROLES,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.database = database
        self.iam = iam
        self.roles = tuple(roles)
        self._now = now

    def resolve_role(self, scope: str, role: str) -> str:
        return self.database.resolve_role(scope, role)

    def find_assignment(self, key: GrantKey) -> Assignment | None:
        return self.database.find_assignment(key)

    def get_assignment(self, scope: str, name: str) -> Assignment | None:
        return self.database.get_assignment(scope, name)

    def create_assignment(
        self,
        key: GrantKey,
        name: str,
        description: str,
        principal_type: str = "User",
        expires_at: datetime | None = None,
    ) -> Assignment:
        server = self._cloud_sql(key.scope)
        if server is None:
            return self.database.create_assignment(key, name, description, principal_type, expires_at)
        if expires_at is None:
            raise PermanentError("a Cloud SQL grant needs an expiry: its IAM bindings end by themselves")
        project, title = project_of(server), layer_title(key)
        member = self._member(server, key.principal_id)
        made = self.iam.put_titled(project, title, member, self.roles, description, expires_at)
        try:
            return self.database.create_assignment(key, name, description, principal_type, expires_at)
        except Exception as exc:
            if made:
                self._roll_back(project, title, exc)
            raise

    def delete_assignment(self, scope: str, name: str) -> None:
        self.database.delete_assignment(scope, name)
        server = self._cloud_sql(scope)
        if server is None:
            return
        principal, sep, role = name.rpartition("/")
        if not sep:
            return
        self.iam.remove_titled(project_of(server), layer_title(GrantKey.of(self.name, principal, role, server.scope)))

    def list_marked(self) -> list[Assignment]:
        marked = self.database.list_marked()
        for project in sorted({project_of(s) for s in self.database.servers.servers if s.platform == "cloud-sql"}):
            swept = self.iam.sweep_expired(project, self._now())
            if swept:
                log.info("removed %d expired Cloud SQL sign-in binding(s) from %s", swept, project)
        return marked

    # ------------------------------------------------------------ internals

    def _cloud_sql(self, scope: str) -> Server | None:
        server = self.database.servers.by_scope(scope)
        return server if server is not None and server.platform == "cloud-sql" else None

    def _member(self, server: Server, principal_id: str) -> str:
        if ":" in principal_id:
            member = member_of(principal_id)
            if member.startswith("group:"):
                raise PermanentError(f"{principal_id} is a group: Cloud SQL IAM database users are people and "
                                     "service accounts, who sign in as themselves; ask for each of them")
            return member
        login = server.login_for(principal_id)
        if login is None or "@" not in login:
            raise PermanentError(f"no Google identity for principal {principal_id} on Cloud SQL server "
                                 f"'{server.name}': name its IAM database user (an e-mail address) under `logins`")
        return f"serviceAccount:{login}.gserviceaccount.com" if login.endswith(".iam") else f"user:{login}"

    def _roll_back(self, project: str, title: str, cause: BaseException) -> None:
        try:
            self.iam.remove_titled(project, title)
            log.info("took back the Cloud SQL sign-in bindings %s on %s: the database grant failed (%s)",
                     title, project, type(cause).__name__)
        except Exception:
            # NB. They end by themselves at the hold's expiry and are swept by reconcile after.
            log.exception("could not take back the Cloud SQL sign-in bindings %s on %s", title, project)
        if isinstance(cause, AssignmentExists):
            log.info("the database membership exists outside jitgate: the hold is preexisting")
