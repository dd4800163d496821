"""The scaffolder module as an adopter meets it: packed with `npm pack`, installed from its tarball into a minimal
Backstage backend of the current release beside its peers, type-checked as a consumer does (`skipLibCheck: false`),
and started against a running `jitgate serve` and a throwaway PostgreSQL (the backend's database). The request-access
template then runs as a real scaffolder task, through the scaffolder's REST API, and the request reaches `active`.

Marked `backstage`: needs node >= 20, npm and PostgreSQL; in CI (`JITGATE_REQUIRE_BACKSTAGE`) a missing one fails the
tests instead of skipping them. The npm install takes about a minute with a warm cache, two with a cold one.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shared.adapters.postgres.throwaway import ThrowawayPostgres
from tests.e2e.conftest import HOST, JANE, JitgateServer, free_port, running_server
from tests.postgres import start_server

pytestmark = pytest.mark.backstage

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "backstage" / "plugins" / "scaffolder-backend-module-jitgate"
TEMPLATE = ROOT / "backstage" / "templates" / "request-access" / "template.yaml"
PACKAGE = "@jitgate/backstage-plugin-scaffolder-backend-module-jitgate"

# NB. One Backstage release line: the backend packages of the current release, and the module's peers at the
# versions that release ships (what `npm view @backstage/plugin-scaffolder-backend@4.3.0 dependencies` names).
BACKEND = {
    "@backstage/backend-defaults": "0.19.0",
    "@backstage/plugin-auth-backend": "0.31.0",
    "@backstage/plugin-auth-backend-module-guest-provider": "0.2.25",
    "@backstage/plugin-catalog-backend": "4.0.5",
    "@backstage/plugin-catalog-backend-module-scaffolder-entity-model": "0.2.26",
    "@backstage/plugin-scaffolder-backend": "4.3.0",
}
PEERS = {
    "@backstage/backend-plugin-api": "1.12.0",
    "@backstage/catalog-model": "1.10.3",
    "@backstage/errors": "1.4.0",
    "@backstage/plugin-catalog-node": "3.0.0",
    "@backstage/plugin-scaffolder-node": "1.0.0",
}
CONSUMER_TOOLS = {"typescript": "~5.9.3", "@types/node": "^20.11.0", "pg": "^8.11.3"}

# The backend's own identity towards the local jitgate (a Jit.Submitter, as jitgate.http.devPrincipal says).
SUBMITTER = "5b0c1e2d-7a3f-4c6e-9d10-2f3a4b5c6d7e"
DEV_SUB = "11111111-1111-4111-8111-111111111111"
SCOPE = f"/subscriptions/{DEV_SUB}/resourceGroups/rg-payments-dev"
COMPONENT = "component:default/payments-sandbox"

INDEX_JS = """\
// The smallest backend that runs the request-access template: packages/backend/src/index.ts of a fresh app, pruned.
const { createBackend } = require('@backstage/backend-defaults');

const backend = createBackend();
backend.add(import('@backstage/plugin-auth-backend'));
backend.add(import('@backstage/plugin-auth-backend-module-guest-provider'));
backend.add(import('@backstage/plugin-catalog-backend'));
backend.add(import('@backstage/plugin-catalog-backend-module-scaffolder-entity-model'));
backend.add(import('@backstage/plugin-scaffolder-backend'));
backend.add(import('@jitgate/backstage-plugin-scaffolder-backend-module-jitgate'));
backend.start();
"""

CONSUMER_TS = """\
// What a backend's index.ts does with the module, compiled as an app that type-checks its libraries does.
import jitgate, {
  createRequestAccessAction,
  HttpSender,
  InvalidAccessRequest,
} from '@jitgate/backstage-plugin-scaffolder-backend-module-jitgate';

export const feature = jitgate;
export const action = createRequestAccessAction({
  sender: new HttpSender({ baseUrl: 'http://127.0.0.1:8080' }),
  statusUrlOf: id => `http://127.0.0.1:8080/api/access-requests/${id}`,
});
export const refused = (error: unknown) => error instanceof InvalidAccessRequest;
"""


def backstage_required() -> bool:
    """In CI a missing node, npm or PostgreSQL fails these tests; elsewhere they skip."""
    return bool(os.environ.get("CI") or os.environ.get("JITGATE_REQUIRE_BACKSTAGE"))


def run(args: list[str], cwd: Path, timeout: float) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "CI": "true"})
    if done.returncode != 0:
        pytest.fail(f"{' '.join(args)} in {cwd} exited {done.returncode}:\n"
                    f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    return done.stdout


@dataclass
class Installed:
    """A backend directory with the module installed from its packed tarball, beside its peers."""

    dir: Path
    packed_files: list[str]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        if backstage_required():
            pytest.fail("CI needs node >= 20 and npm for the backstage tests")
        pytest.skip("node and npm are needed to install a Backstage backend")
    if not (MODULE / "node_modules").is_dir():
        run([npm, "ci", "--no-audit", "--no-fund"], MODULE, 600)
    work = tmp_path_factory.mktemp("backstage-backend")
    # The package is built first (dist/ is not committed), then packed as `npm publish` would pack it.
    run([npm, "run", "build"], MODULE, 300)
    [packed] = json.loads(run([npm, "pack", "--json", "--pack-destination", str(work)], MODULE, 300))
    tarball = work / packed["filename"]
    manifest = {
        "name": "backend", "version": "0.0.0", "private": True,
        "dependencies": {**BACKEND, **PEERS, **CONSUMER_TOOLS, PACKAGE: f"file:./{tarball.name}"},
    }
    (work / "package.json").write_text(json.dumps(manifest, indent=2))
    # NB. --ignore-scripts: nothing here needs a native add-on (the database is PostgreSQL, not SQLite).
    # --legacy-peer-deps: plugin-scaffolder-node 1.0 names @backstage/backend-test-utils ^1.12 as an optional peer,
    # a version not published yet, which npm refuses to leave out; the peers are listed above instead.
    run([npm, "install", "--ignore-scripts", "--no-audit", "--no-fund", "--omit=optional", "--legacy-peer-deps"],
        work, 900)
    return Installed(work, [f["path"] for f in packed["files"]])


# ---------------------------------------------------------------- item 6: installable, as the README says


def test_the_packed_package_holds_the_build_the_config_schema_and_the_examples_and_no_test_code(
    installed: Installed,
) -> None:
    files = set(installed.packed_files)
    assert {"package.json", "dist/index.js", "dist/index.d.ts", "config.d.ts", "examples/databases.yaml"} <= files
    assert not [f for f in files if "/testing/" in f or ".test." in f or f.startswith("src/")], sorted(files)
    manifest = json.loads((installed.dir / "node_modules" / PACKAGE / "package.json").read_text())
    assert "private" not in manifest
    assert manifest["backstage"] == {"role": "backend-plugin-module", "pluginId": "scaffolder",
                                     "pluginPackage": "@backstage/plugin-scaffolder-backend"}
    assert manifest["license"] and manifest["repository"]["directory"] == MODULE.relative_to(ROOT).as_posix()
    assert set(PEERS) <= set(manifest["peerDependencies"])
    assert not [name for name in manifest.get("dependencies", {}) if name.startswith("@backstage/")]


def test_the_installed_package_loads_as_a_backend_feature_from_require_and_import(installed: Installed) -> None:
    script = f"""
      const cjs = require('{PACKAGE}');
      import('{PACKAGE}').then(esm => {{
        const feature = cjs.default;
        console.log(JSON.stringify({{
          type: feature.$$type, esm: esm.default.default === feature || esm.default === feature,
          exports: Object.keys(cjs).sort(), schema: require.resolve('{PACKAGE}/package.json'),
        }}));
      }});
    """
    loaded = json.loads(run(["node", "-e", script], installed.dir, 60))
    assert loaded["type"] == "@backstage/BackendFeature"
    assert loaded["esm"]
    assert {"createRequestAccessAction", "HttpSender", "ServiceBusSender", "InvalidAccessRequest"} <= set(
        loaded["exports"])


# ---------------------------------------------------------------- item 11: one release line, clean types


def test_the_backend_holds_one_copy_of_each_backstage_package_the_module_shares(installed: Installed) -> None:
    for name in PEERS:
        copies = sorted(str(p.parent.relative_to(installed.dir)) for p in installed.dir.glob(
            f"node_modules/**/{name}/package.json"))
        assert copies == [f"node_modules/{name}"], f"{name} is installed more than once: {copies}"


def test_the_published_types_compile_in_a_consumer_that_checks_its_libraries(installed: Installed) -> None:
    (installed.dir / "consumer.ts").write_text(CONSUMER_TS)
    (installed.dir / "tsconfig.json").write_text(json.dumps({
        "compilerOptions": {"strict": True, "noEmit": True, "skipLibCheck": False, "module": "node16",
                            "moduleResolution": "node16", "target": "ES2022", "types": ["node"]},
        "files": ["consumer.ts"],
    }))
    done = subprocess.run(["node", "node_modules/typescript/bin/tsc", "-p", "tsconfig.json"], cwd=installed.dir,
                          capture_output=True, text=True, timeout=300, check=False)
    # NB. Only the module's own files and the consumer count: Backstage's own typings reach @azure/msal-node's,
    # which a CommonJS consumer cannot compile, with or without this module.
    ours = [line for line in done.stdout.splitlines()
            if line.startswith(("consumer.ts", f"node_modules/{PACKAGE}/"))]
    assert ours == [], "\n".join(ours)
    assert done.returncode in (0, 2), done.stdout[-2000:]


# ---------------------------------------------------------------- item 12: a real backend runs the template


@dataclass
class Backend:
    """A running Backstage backend and the tokens that reach it."""

    url: str
    service_token: str
    log_path: Path
    process: subprocess.Popen[bytes]
    jitgate: JitgateServer

    def log_tail(self, lines: int = 120) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def user_token(self) -> str:
        """A user token for user:default/jane from the guest sign-in (what the app's sign-in page does)."""
        response = httpx.get(f"{self.url}/api/auth/guest/refresh", headers={"X-Requested-With": "XMLHttpRequest"},
                             timeout=30)
        assert response.status_code == 200, f"guest sign-in: {response.status_code} {response.text}\n{self.log_tail()}"
        token: str = response.json()["backstageIdentity"]["token"]
        return token


def readme_block(first_line: str) -> str:
    """The YAML block of backstage/README.md that starts with `first_line`, without its list indent."""
    readme = (ROOT / "backstage" / "README.md").read_text(encoding="utf-8")
    for indent, body in re.findall(r"^( *)```ya?ml\n(.*?)^\1```", readme, flags=re.M | re.S):
        text = re.sub(rf"^{indent}", "", body, flags=re.M)
        if text.startswith(first_line):
            return text
    raise AssertionError(f"backstage/README.md has no YAML block starting with {first_line!r}")


def catalog_entities() -> list[dict[str, Any]]:
    """The README's local try: the requester, as the Microsoft Graph provider would ingest her, and a component
    offering `local` access."""
    return [doc for doc in yaml.safe_load_all(readme_block("# catalog-local.yaml")) if doc]


def app_config(port: int, pg: ThrowawayPostgres, jitgate: JitgateServer, catalog: Path, token: str) -> dict[str, Any]:
    admin = pg.admin
    return {
        "app": {"baseUrl": "http://127.0.0.1:3000"},
        "backend": {
            "baseUrl": f"http://{HOST}:{port}",
            "listen": {"host": HOST, "port": port},
            "database": {"client": "pg", "connection": {"host": admin.host, "port": admin.port,
                                                        "user": admin.user, "password": admin.password}},
            "auth": {"externalAccess": [{"type": "static", "options": {"token": token, "subject": "jitgate-ci"}}]},
        },
        "auth": {"providers": {"guest": {"userEntityRef": "user:default/jane",
                                         "dangerouslyAllowOutsideDevelopment": True}}},
        "catalog": {
            "rules": [{"allow": ["Component", "User", "Group", "Template", "Location", "Resource"]}],
            "locations": [{"type": "file", "target": str(catalog)}, {"type": "file", "target": str(TEMPLATE)}],
        },
        "scaffolder": {"taskRecovery": {"enabled": True}},
        "jitgate": {"transport": "http", "http": {"baseUrl": jitgate.url, "devPrincipal": SUBMITTER}},
    }


@pytest.fixture(scope="module")
def backend(installed: Installed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    pg = start_server()
    data = tmp_path_factory.mktemp("jitgate-for-backstage")
    try:
        with running_server(data) as jitgate:
            catalog = installed.dir / "catalog-local.yaml"
            catalog.write_text(yaml.safe_dump_all(catalog_entities()))
            (installed.dir / "index.js").write_text(INDEX_JS)
            port, token = free_port(), secrets.token_urlsafe(24)
            config = installed.dir / "app-config.yaml"
            config.write_text(yaml.safe_dump(app_config(port, pg, jitgate, catalog, token)))
            log_path = installed.dir / "backend.log"
            with open(log_path, "wb") as log:
                process = subprocess.Popen(["node", "index.js", "--config", str(config)], cwd=installed.dir,
                                           stdout=log, stderr=subprocess.STDOUT,
                                           env={**os.environ, "NODE_ENV": "production", "LOG_LEVEL": "info"})
            started = Backend(f"http://{HOST}:{port}", token, log_path, process, jitgate)
            try:
                wait_until_ready(started)
                yield started
            finally:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(20)
    finally:
        pg.stop()


def wait_until_ready(backend: Backend, timeout: float = 120) -> None:
    """Until the catalog serves the template and the component (it reads its file locations after start)."""
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {backend.service_token}"}
    wanted = ("template/default/jitgate-request-access", "component/default/payments-sandbox", "user/default/jane")
    while True:
        if backend.process.poll() is not None:
            pytest.fail(f"the backend exited with {backend.process.returncode}:\n{backend.log_tail()}")
        try:
            found = [httpx.get(f"{backend.url}/api/catalog/entities/by-name/{ref}", headers=headers, timeout=10)
                     .status_code == 200 for ref in wanted]
        except httpx.HTTPError:
            found = [False]
        if all(found):
            return
        if time.monotonic() >= deadline:
            pytest.fail(f"the backend did not serve {wanted} within {timeout}s:\n{backend.log_tail()}")
        time.sleep(1)


def run_task(backend: Backend, values: dict[str, Any], timeout: float = 120) -> tuple[str, list[dict[str, Any]]]:
    """Start the template as the signed-in user; the task's final status and its events."""
    headers = {"Authorization": f"Bearer {backend.user_token()}"}
    created = httpx.post(f"{backend.url}/api/scaffolder/v2/tasks", headers=headers, timeout=30,
                         json={"templateRef": "template:default/jitgate-request-access", "values": values})
    assert created.status_code == 201, f"{created.status_code} {created.text}\n{backend.log_tail()}"
    task_id = created.json()["id"]
    deadline = time.monotonic() + timeout
    while True:
        task = httpx.get(f"{backend.url}/api/scaffolder/v2/tasks/{task_id}", headers=headers, timeout=30).json()
        if task["status"] in ("completed", "failed", "cancelled"):
            events = httpx.get(f"{backend.url}/api/scaffolder/v2/tasks/{task_id}/events", headers=headers,
                               timeout=30).json()
            return str(task["status"]), list(events)
        if time.monotonic() >= deadline:
            pytest.fail(f"task {task_id} is still {task['status']} after {timeout}s:\n{backend.log_tail()}")
        time.sleep(0.5)


def test_the_template_runs_as_a_real_task_and_the_request_reaches_active(backend: Backend) -> None:
    jitgate = backend.jitgate
    status, events = run_task(backend, {
        "component": COMPONENT, "scope": SCOPE, "role": "Reader", "duration": "PT30M",
        "justification": "Read the payments settings for INC-4711", "ticket": "INC-4711",
    })
    log = "\n".join(str(e.get("body", {}).get("message", "")) for e in events)
    assert status == "completed", log
    [completion] = [e for e in events if e["type"] == "completion"]
    output = completion["body"]["output"]
    [follow] = [link for link in output["links"] if link["title"] == "Follow your request"]
    request_id = follow["url"].rsplit("/", 1)[-1]
    assert follow["url"] == f"{jitgate.url}/api/access-requests/{request_id}"
    assert re.search(rf"Sent access request {request_id} for Reader at {re.escape(SCOPE)} \(local\)", log), log

    active = jitgate.wait_state(request_id, "active", timeout=30)
    request = active["request"]
    assert request["requester"] == {"principalId": JANE, "principalType": "User", "displayName": "Jane Doe",
                                    "email": "jane@example.com", "backstageRef": "user:default/jane"}
    assert request["target"] == {"provider": "local", "scope": SCOPE, "role": "Reader"}
    assert request["context"]["entityRef"] == COMPONENT
    [assignment] = jitgate.assignments_of(request_id)
    assert assignment.principal_id == JANE



def test_a_task_the_action_refuses_fails_with_the_reason_and_sends_nothing(backend: Backend) -> None:
    jitgate = backend.jitgate
    before = jitgate.assignments()
    status, events = run_task(backend, {
        "component": COMPONENT, "scope": SCOPE, "role": "Reader", "duration": "PT30M",
        "justification": "soft\u00adhyphen hides text",
    })
    log = "\n".join(str(e.get("body", {}).get("message", "")) for e in events)
    assert status == "failed"
    assert "The access request is invalid: justification: must not contain control or bidirectional formatting " \
           "characters (U+00AD)" in log, log
    assert jitgate.assignments() == before
