"""`jitgate` command line. Each command imports what it needs when it runs (start-up stays fast)."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .adapters.databases.servers import Servers
    from .domain.policy import Policy
    from .settings import Settings

DEFAULT_URL = "http://127.0.0.1:8000"
DEV_ADMIN = "00000000-0000-4000-8000-0000000000ad"
HTTP_TIMEOUT = 30.0


def main(argv: Sequence[str] | None = None) -> int:
    from .settings import SettingsError

    parser = _parser()
    args = parse(parser, argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"jitgate: {exc}", file=sys.stderr)
        return 1
    except SettingsError as exc:
        problems = "".join(f"\n  {problem}" for problem in exc.problems)
        print(f"jitgate: invalid settings:{problems}", file=sys.stderr)
        return 1


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse `argv` (default: the process's arguments). A command with free words takes them wherever they
    stand, before or after its options, as the README shows: `teams approve ID --as OID looks good`."""
    args, extra = parser.parse_known_args(argv)
    words = getattr(args, "free_words", None)
    if extra and words is not None:
        split = extra.index("--") if "--" in extra else len(extra)
        before, literal = extra[:split], extra[split + 1:]
        options = [word for word in before if word.startswith("-") and word != "-"]
        if options:
            parser.error(f"unrecognized arguments: {' '.join(options)}")
        setattr(args, words, [*getattr(args, words), *before, *literal])
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


class CliError(Exception):
    """A command that cannot do what it was asked, with the reason for the user."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jitgate", description="Just-in-time, time-boxed, approval-gated access."
    )
    sub = p.add_subparsers(metavar="COMMAND")

    s = sub.add_parser("serve", help="API, bus workers and the reconcile timer in one process (local mode)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    _local_options(s)
    s.add_argument("--reconcile-seconds", type=float, default=None, help="reconcile interval (default 60)")
    s.add_argument("--log-level", default="info")
    s.set_defaults(run=_serve)

    d = sub.add_parser("demo", help="start a fresh embedded instance and play the whole story over HTTP")
    d.add_argument("--keep", action="store_true", help="keep the data directory afterwards")
    d.set_defaults(run=_demo)

    r = sub.add_parser("request", help="submit an access request JSON file")
    r.add_argument("file", type=Path)
    _client_options(r)
    r.set_defaults(run=_request)

    t = sub.add_parser("teams", help="Teams: send a signed outgoing-webhook command, or check the Teams settings")
    tsub = t.add_subparsers(metavar="ACTION")
    for verb in ("approve", "deny", "status"):
        tv = tsub.add_parser(verb, help=f"a signed `{verb}` as Teams would send it")
        tv.add_argument("request_id")
        tv.add_argument("text", nargs="*", help="comment (approve) or reason (deny), before or after the options")
        tv.add_argument("--as", dest="principal", required=True, help="the sender's Entra object id")
        tv.add_argument("--name", default="Approver")
        _client_options(tv)
        tv.add_argument("--data-dir", type=Path, default=None, help="where the local webhook secret lives")
        tv.set_defaults(run=_teams, verb=verb, free_words="text")
    tc = tsub.add_parser("check", help="check the Teams settings: the secret, a signed test message to a running "
                                       "jitgate (--url), a test card to the Workflows webhook")
    tc.add_argument("--url", default=None, help="a running jitgate to send a signed test message to")
    tc.add_argument("--mention", action="append", default=[], metavar="OBJECT_ID",
                    help="@mention this Entra user on the test card (repeatable)")
    tc.add_argument("--data-dir", type=Path, default=None, help="where the local webhook secret lives")
    tc.set_defaults(run=_teams_check)

    a = sub.add_parser("audit", help="query and verify the audit trail")
    asub = a.add_subparsers(metavar="ACTION")
    q = asub.add_parser("query", help="audit events as a table, JSON or CSV")
    for flag in ("request-id", "principal-id", "type", "since", "until", "continuation"):
        q.add_argument(f"--{flag}")
    q.add_argument("--limit", type=int, default=100)
    fmt = q.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    _client_options(q)
    q.set_defaults(run=_audit_query)
    v = asub.add_parser("verify", help="recompute every hash chain; names the first broken link")
    v.add_argument("--request-id")
    v.add_argument("--data-dir", type=Path, default=None, help="verify a local store directly (no server)")
    _client_options(v)
    v.set_defaults(run=_audit_verify)

    pol = sub.add_parser("policy", help="check, explain and test policy files")
    psub = pol.add_subparsers(metavar="ACTION")
    c = psub.add_parser("check", help="compile a policy file; line-numbered errors")
    c.add_argument("file", type=Path)
    c.set_defaults(run=_policy_check)
    e = psub.add_parser("explain", help="show how each rule treats a request")
    e.add_argument("file", type=Path)
    e.add_argument("request", type=Path)
    e.add_argument(
        "--groups", default="", help="requester groups, comma separated (default: from the policy)"
    )
    e.set_defaults(run=_policy_explain)
    pt = psub.add_parser("test", help="run a YAML file of cases with expected outcomes")
    pt.add_argument("cases", type=Path, nargs="+")
    pt.set_defaults(run=_policy_test)

    sc = sub.add_parser("schema", help="write or check the committed JSON Schema and the Backstage plain-text tables")
    sc.add_argument("action", choices=["write", "check"])
    sc.set_defaults(run=_schema)

    dl = sub.add_parser("dlq", help="inspect and replay dead-lettered messages")
    dsub = dl.add_subparsers(metavar="ACTION")
    dll = dsub.add_parser("list", help="dead-lettered messages with their reasons")
    dll.add_argument("--queue", action="append", help="default: every queue")
    dll.add_argument("--json", action="store_true")
    _local_options(dll)
    dll.set_defaults(run=_dlq_list)
    dlr = dsub.add_parser("replay", help="send a dead-lettered message back to its queue")
    dlr.add_argument("queue")
    dlr.add_argument("sequence_number", type=int, nargs="*", help="default: every message in that DLQ")
    _local_options(dlr)
    dlr.set_defaults(run=_dlq_replay)

    inf = sub.add_parser("infra", help="infrastructure inputs generated from the policy")
    isub = inf.add_subparsers(metavar="ACTION")
    ir = isub.add_parser("roles", help="the role definition ids the grant permission may assign (allowed-roles.json)")
    ir.add_argument("--policy", type=Path, default=None, help="default: $JITGATE_POLICY or policies/example.yaml")
    ir.add_argument("--write", action="store_true", help="write infra/allowed-roles.json instead of printing it")
    ir.set_defaults(run=_infra_roles)
    isq = isub.add_parser("sql", help="the one-time setup script of a database server of the servers file (infra/sql), "
                                      "with a GRANT per role the policy lets jitgate grant there")
    isq.add_argument("--server", required=True, help="the server's name in the servers file")
    isq.add_argument("--servers", type=Path, default=None, help="default: $JITGATE_DATABASES_FILE")
    isq.add_argument("--policy", type=Path, default=None, help="default: $JITGATE_POLICY or policies/example.yaml")
    isq.add_argument("--identity-object-id", default="",
                     help="object (principal) id of jitgate's managed identity, the deployment's identityPrincipalId "
                          "(Azure flexible servers and Azure SQL)")
    isq.set_defaults(run=_infra_sql)

    db = sub.add_parser("databases", help="database servers jitgate grants on, PostgreSQL and Azure SQL "
                                          "(JITGATE_DATABASES_FILE)")
    dbsub = db.add_subparsers(metavar="ACTION")
    dbc = dbsub.add_parser("check", help="per server: can jitgate sign in, does it hold the rights it needs, "
                                         "and how to fix what it lacks")
    dbc.add_argument("--servers", type=Path, default=None, help="default: $JITGATE_DATABASES_FILE")
    dbc.add_argument("--policy", type=Path, default=None, help="default: $JITGATE_POLICY or policies/example.yaml")
    dbc.set_defaults(run=_databases_check)

    ev = sub.add_parser("envoy", help="services behind Envoy, with jitgate as their external authorization")
    evsub = ev.add_subparsers(metavar="ACTION")
    evc = evsub.add_parser("config", help="the Envoy configuration (jwt_authn, ext_authz, the jitgate cluster) that "
                                          "protects one service of JITGATE_ENVOY_SERVICES, as YAML")
    evc.add_argument("--service", required=True, help="the service's name in JITGATE_ENVOY_SERVICES")
    evc.add_argument("--upstream", required=True, help="host:port of the service Envoy forwards to")
    evc.add_argument("--listen", default="0.0.0.0:10000", help="host:port Envoy listens on (default 0.0.0.0:10000)")
    evc.add_argument("--admin", default="127.0.0.1:9901", help="host:port of Envoy's admin interface")
    evc.add_argument("--url", default=os.environ.get("JITGATE_URL", DEFAULT_URL), help="jitgate as Envoy reaches it")
    evc.add_argument("--jwks-uri", default="", help="default: the tenant's Entra keys "
                                                    "(https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys)")
    evc.add_argument("--ca-file", default=None, help="CA bundle for https clusters (default: Debian's)")
    evc.set_defaults(run=_envoy_config)

    rc = sub.add_parser("reconcile", help="run one reconcile pass against the local store")
    _local_options(rc)
    rc.set_defaults(run=_reconcile)
    return p


def _local_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None, help="default: $JITGATE_DATA_DIR or .jitgate")
    p.add_argument(
        "--policy", type=Path, default=None, help="default: $JITGATE_POLICY or policies/example.yaml"
    )


def _client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("JITGATE_URL", DEFAULT_URL))
    p.add_argument(
        "--principal-as",
        dest="caller",
        default=os.environ.get("JITGATE_DEV_PRINCIPAL", DEV_ADMIN),
        help="local development identity (object id) to call as",
    )
    p.add_argument("--roles", default="Jit.Admin,Jit.Auditor", help="local development roles")
    p.add_argument("--token", default=os.environ.get("JITGATE_TOKEN"), help="bearer token (Azure)")


def _settings(args: argparse.Namespace) -> Any:
    from dataclasses import replace
    from datetime import timedelta

    from .settings import Settings

    s = Settings.from_env()
    if getattr(args, "data_dir", None):
        s = replace(s, data_dir=args.data_dir)
    if getattr(args, "policy", None):
        s = replace(s, policy_path=args.policy)
    if getattr(args, "reconcile_seconds", None):
        s = replace(s, reconcile_interval=timedelta(seconds=args.reconcile_seconds))
    return s


def _client(args: argparse.Namespace, identity: bool = True) -> Any:
    import httpx

    headers: dict[str, str] = {}
    if identity and args.token:
        headers = {"Authorization": f"Bearer {args.token}"}
    elif identity:
        headers = {"X-Jitgate-Dev-Principal": args.caller, "X-Jitgate-Dev-Roles": args.roles}
    return httpx.Client(base_url=args.url, headers=headers, timeout=HTTP_TIMEOUT)


def _call(args: argparse.Namespace, method: str, path: str, *, identity: bool = True, **options: Any) -> Any:
    """One request to the jitgate at `--url`; a server that cannot be reached is one CliError line, not a
    traceback."""
    import httpx

    try:
        with _client(args, identity) as client:
            return client.request(method, path, **options)
    except httpx.TimeoutException:
        raise CliError(f"jitgate at {args.url} did not answer within {HTTP_TIMEOUT:g} seconds") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        hint = " — is `jitgate serve` running?" if isinstance(exc, httpx.ConnectError) else ""
        raise CliError(f"cannot reach jitgate at {args.url}: {_cause(exc)}{hint}") from None


def _cause(exc: BaseException) -> str:
    """`connection refused` from `[Errno 111] Connection refused` and the like."""
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc).strip()) or type(exc).__name__
    return text[:1].lower() + text[1:]


def _answer(response: Any, what: str, expected: Collection[int] = (200,), *, identity: bool = True) -> Any:
    """The JSON document of an answer with an `expected` status; CliError, in one line, for any other answer
    (401, 403, 5xx, a proxy's page). `identity`: the call was made as the caller the options name."""
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if response.status_code in expected and doc is not None:
        return doc
    if isinstance(doc, dict) and isinstance(doc.get("detail"), str):
        said = doc["detail"]
    else:
        said = " ".join(response.text.split())[:200] or "no body"
    status = f"{response.status_code} {response.reason_phrase}".strip()
    refused = identity and response.status_code in (401, 403)
    hint = " (call as someone else with --principal-as and --roles locally, --token in Azure)" if refused else ""
    raise CliError(f"{what}: jitgate answered {status}: {said}{hint}")


def _serve(args: argparse.Namespace) -> int:
    from . import server
    from .domain.errors import PolicyError
    from .runtime import build

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = _settings(args)
    try:
        runtime = build(settings)
    except PolicyError as exc:
        raise CliError(f"policy {settings.policy_path} is invalid:\n{exc}") from None
    server.serve(runtime, settings, args.host, args.port, args.log_level)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(keep=args.keep)


def _request(args: argparse.Namespace) -> int:
    try:
        body = args.file.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    response = _call(args, "POST", "/api/access-requests", content=body,
                     headers={"Content-Type": "application/json"})
    # NB. A refused request (409, 422) is an answer about the request: it is printed whole, with its reasons.
    print(json.dumps(_answer(response, "request", expected=(202, 409, 422)), indent=2))
    return 0 if response.status_code == 202 else 1


def _teams(args: argparse.Namespace) -> int:
    from .teams import outgoing_payload, sign

    settings = _settings(args)
    text = " ".join([args.verb, args.request_id, *args.text])
    body = outgoing_payload(text, args.principal, args.name)
    signature = sign(settings.resolved_teams_secret(), body)
    response = _call(args, "POST", "/api/teams/webhook", identity=False, content=body,
                     headers={"Authorization": signature, "Content-Type": "application/json"})
    reply = _answer(response, "teams", identity=False)
    print(reply.get("text") if isinstance(reply, dict) and reply.get("text") else reply)
    return 0


def _teams_check(args: argparse.Namespace) -> int:
    from .adapters.teams.check import check_teams
    from .domain.ids import is_guid

    wrong = [oid for oid in args.mention if not is_guid(oid.lower())]
    if wrong:
        raise CliError(f"--mention takes Entra object ids (GUIDs), not {', '.join(wrong)}")
    try:
        settings = _settings(args)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    checks = check_teams(settings, args.url, args.mention)
    for check in checks:
        print(f"{check.status:<8}{check.name:<9}{check.detail}")
    return 1 if any(check.status == "failed" for check in checks) else 0


def _audit_query(args: argparse.Namespace) -> int:
    params = {
        k: v
        for k, v in {
            "requestId": args.request_id,
            "principalId": args.principal_id,
            "type": args.type,
            "since": args.since,
            "until": args.until,
            "limit": args.limit,
            "continuation": args.continuation,
        }.items()
        if v is not None
    }
    page = _answer(_call(args, "GET", "/api/audit/events", params=params), "audit query")
    events = page["events"]
    if args.json:
        print(json.dumps(page, indent=2))
    elif args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["at", "requestId", "seq", "type", "actor", "data", "hash"])
        for ev in events:
            writer.writerow(
                [
                    ev["at"],
                    ev["requestId"],
                    ev["seq"],
                    ev["type"],
                    ev["actor"]["principalId"],
                    json.dumps(ev["data"], sort_keys=True),
                    ev["hash"],
                ]
            )
    else:
        print(format_events(events))
        if page.get("continuation"):
            print(f"(more: --continuation {page['continuation']})")
    return 0


def format_events(events: list[dict[str, Any]]) -> str:
    """A fixed-width table of audit events for terminals."""
    lines = [f"{'at':<27} {'request':<36} {'seq':>3}  {'type':<24} {'actor':<20} summary"]
    for ev in events:
        summary = _event_summary(ev["data"])
        lines.append(
            f"{ev['at']:<27} {ev['requestId']:<36} {ev['seq']:>3}  {ev['type']:<24} "
            f"{ev['actor']['principalId'][:20]:<20} {str(summary)[:60]}"
        )
    return "\n".join(lines)


def _event_summary(data: dict[str, Any]) -> str:
    if "refused" in data:
        return f"refused: {data['refused']}"
    if "counted" in data:
        return f"{data.get('verdict', 'approve')} {data.get('approvals', '')}/{data.get('required', '')}".strip(" /")
    parts = [str(data[k]) for k in ("outcome", "rule", "reason", "expiresAt", "at") if data.get(k)]
    if "latenessSeconds" in data:
        parts.append(f"late {data['latenessSeconds']}s")
    return " ".join(parts)


def _audit_verify(args: argparse.Namespace) -> int:
    if args.data_dir is not None:
        from .adapters.embedded.store import SqliteStore
        from .domain.audit import verification

        path = args.data_dir / "store.db"
        if not path.exists():
            raise CliError(f"no store at {path}")
        with SqliteStore(path) as store:
            if args.request_id:
                result = verification([store.verify_chain(args.request_id.lower())])
            else:
                result = verification(store.verify_chains(processes=os.cpu_count() or 1))
    else:
        params = {"requestId": args.request_id} if args.request_id else {}
        result = _answer(_call(args, "GET", "/api/audit/verify", params=params), "audit verify")
    print(verification_in_words(result))
    return 0 if result["ok"] else 1


def verification_in_words(result: dict[str, Any]) -> str:
    """The lines `jitgate audit verify` prints for a verification (`domain.audit.verification`)."""
    lines = [
        f"audit verify: BROKEN — request {broken['requestId']} at seq {broken['brokenSeq']} "
        f"(event {broken['brokenEventId']}): {broken['reason']}"
        for broken in result["broken"]
    ]
    unanchored = result.get("unanchored", 0)
    if result["ok"]:
        ends = "" if unanchored else ", every chain ending where its request record says"
        counts = f"{result['chains']} chains, {result['events']} events"
        lines.append(f"audit verify: OK — {counts}, every link intact{ends}")
    if unanchored:
        ids = result.get("unanchoredRequestIds", [])
        more = f" and {unanchored - len(ids)} more" if unanchored > len(ids) else ""
        what = "chain without a request record, so its end is" if unanchored == 1 else (
            "chains without a request record, so their ends are")
        lines.append(f"audit verify: {unanchored} {what} not checked: {', '.join(ids)}{more}")
    return "\n".join(lines)


def _policy_check(args: argparse.Namespace) -> int:
    from .domain.errors import PolicyError
    from .domain.policy import Policy

    try:
        policy = Policy.load(args.file)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{args.file}: OK — {len(policy.rules)} rules, {len(policy.groups)} groups")
    return 0


def _policy_explain(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from .adapters.embedded.policy_directory import PolicyDirectory
    from .domain.errors import InvalidRequest
    from .domain.policy import Policy
    from .domain.request import parse_access_request

    policy = Policy.load(args.file)
    try:
        request = parse_access_request(args.request.read_bytes())
    except InvalidRequest as exc:
        raise CliError(f"{args.request} is not a valid access request: {exc}") from None
    groups = frozenset(g for g in args.groups.split(",") if g) or PolicyDirectory(policy).groups_of(
        request.requester.principal_id
    )
    now = datetime.now(UTC)
    for line in policy.explain(request, groups, now):
        print(line)
    print("decision:", policy.evaluate(request, groups, now).summary())
    return 0


def _policy_test(args: argparse.Namespace) -> int:
    from .domain.errors import PolicyError
    from .policy_cases import run_cases

    failed = passed = 0
    for path in args.cases:
        try:
            report = run_cases(path)
        except PolicyError as exc:
            print(exc, file=sys.stderr)
            return 1
        for case in report.results:
            mark = "PASS" if case.passed else "FAIL"
            print(f"{mark} {path.name}: {case.name}" + ("" if case.passed else f" — {case.message}"))
        passed += sum(1 for c in report.results if c.passed)
        failed += sum(1 for c in report.results if not c.passed)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def _schema(args: argparse.Namespace) -> int:
    from . import schema

    if args.action == "write":
        for path in schema.write_all():
            print(f"wrote {path}")
        return 0
    stale = schema.stale()
    for path in schema.ARTIFACTS:
        if path in stale:
            print(f"{path} is stale: run `jitgate schema write`", file=sys.stderr)
        else:
            print(f"{path} is current")
    return 1 if stale else 0


def _dlq_list(args: argparse.Namespace) -> int:
    from .runtime import build

    runtime = build(_settings(args))
    settings = runtime.settings
    rows = [
        {
            "queue": d.queue,
            "sequenceNumber": d.sequence_number,
            "messageId": d.message_id,
            "deliveryCount": d.delivery_count,
            "reason": d.reason,
            "description": d.description,
            "deadLetteredAt": d.dead_lettered_at.isoformat(),
            "body": d.body.decode("utf-8", "replace"),
        }
        for queue in _queues(settings, args.queue)
        for d in runtime.bus.dead_letters(queue)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no dead-lettered messages")
    for row in rows:
        print(
            f"{row['queue']} #{row['sequenceNumber']} {row['messageId']} after {row['deliveryCount']} deliveries: "
            f"{row['reason']} {row['description']}".rstrip()
        )
    return 0


def _queues(settings: Settings, asked: list[str] | None) -> list[str]:
    """The queues asked for (default: all of jitgate's); CliError naming jitgate's queues for any other."""
    unknown = [queue for queue in asked or [] if queue not in settings.queues]
    if unknown:
        raise CliError(f"no queue {', '.join(unknown)}: jitgate's queues are {', '.join(settings.queues)}")
    return asked or list(settings.queues)


def _dlq_replay(args: argparse.Namespace) -> int:
    from .domain.errors import NotFound
    from .runtime import build

    runtime = build(_settings(args))
    _queues(runtime.settings, [args.queue])
    numbers = args.sequence_number or [d.sequence_number for d in runtime.bus.dead_letters(args.queue)]
    for number in numbers:
        try:
            runtime.bus.replay_dead_letter(args.queue, number)
        except NotFound as exc:
            raise CliError(str(exc)) from None
        print(f"replayed {args.queue} #{number}")
    return 0


def _infra_roles(args: argparse.Namespace) -> int:
    from .domain.errors import PolicyError
    from .domain.policy import Policy
    from .infra_roles import ALLOWED_ROLES_FILE, render, write_allowed_roles

    path = _settings(args).policy_path
    try:
        policy = Policy.load(path)
        if not args.write:
            print(render(policy), end="")
            return 0
        changed = write_allowed_roles(policy)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{ALLOWED_ROLES_FILE} {'updated' if changed else 'already current'} from {path}")
    return 0


def _infra_sql(args: argparse.Namespace) -> int:
    from .domain.errors import PolicyError
    from .infra_sql import setup_script

    loaded = _servers_and_policy(args)
    if loaded is None:
        return 1
    servers, policy = loaded
    server = next((s for s in servers.servers if s.name == args.server), None)
    if server is None:
        known = ", ".join(s.name for s in servers.servers) or "none"
        raise CliError(f"no server named {args.server!r} in {servers.source} (its servers: {known})")
    try:
        print(setup_script(server, policy, args.identity_object_id), end="")
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def _envoy_config(args: argparse.Namespace) -> int:
    import yaml

    from .envoy_config import DEFAULT_CA_FILE, envoy_config, host_port

    settings = _settings(args)
    audience = settings.envoy_services.get(args.service)
    if audience is None:
        known = ", ".join(settings.envoy_services) or "none; set JITGATE_ENVOY_SERVICES=<service>=<audience>,..."
        raise CliError(f"no service {args.service!r} in JITGATE_ENVOY_SERVICES (its services: {known})")
    try:
        config = envoy_config(args.service, audience, settings.envoy_tenant, host_port(args.upstream),
                              host_port(args.listen), args.url, host_port(args.admin), args.jwks_uri,
                              args.ca_file or DEFAULT_CA_FILE)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(f"# Envoy in front of {args.service}, with jitgate at {args.url} as its external authorization "
          "(jitgate envoy config)")
    print(yaml.safe_dump(config, sort_keys=False), end="")
    return 0


def _servers_and_policy(args: argparse.Namespace) -> tuple[Servers, Policy] | None:
    """The servers file (--servers or JITGATE_DATABASES_FILE) and the policy; None once their problems are
    printed."""
    from .adapters.databases.servers import Servers, ServersFileError
    from .domain.errors import PolicyError
    from .domain.policy import Policy

    settings = _settings(args)
    path = args.servers or settings.databases_file
    if path is None:
        raise CliError("no servers file: pass --servers FILE or set JITGATE_DATABASES_FILE (docs/databases.md)")
    try:
        return Servers.load(path), Policy.load(settings.policy_path)
    except (ServersFileError, PolicyError) as exc:
        print(exc, file=sys.stderr)
        return None


def _databases_check(args: argparse.Namespace) -> int:
    from .adapters.databases.check import check_all, render

    loaded = _servers_and_policy(args)
    if loaded is None:
        return 1
    servers, policy = loaded
    results = check_all(servers, policy)
    print(render(results, servers))
    return 0 if all(f.ok for findings in results.values() for f in findings) else 1


def _reconcile(args: argparse.Namespace) -> int:
    from .runtime import build

    runtime = build(_settings(args))
    flushed = runtime.lifecycle.flush_pending()
    report = runtime.lifecycle.reconcile()
    print(json.dumps({"flushed": flushed, **report.as_dict()}, indent=2))
    return 1 if report.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
