/**
 * The access request message, schema version 1 (ARCHITECTURE §2), and the rules it must meet.
 *
 * The source of truth is the Python model `shared/domain/request.py`; the committed JSON Schema
 * is generated from it. These rules repeat the model's (field limits, ISO durations, scope and
 * role shapes per provider) so that a mistake is reported in the scaffolder form instead of as
 * an asynchronous rejection. The contract test `tests/contract/test_backstage_messages.py` checks
 * that what we accept the model accepts, and what we refuse the model refuses.
 */
import { durationMicroseconds, MICROSECONDS_PER_DAY } from './durations';
import type { FieldError } from './errors';

export const PROVIDERS = ['azure-rbac', 'azure-pim', 'gcp-iam', 'local', 'postgres', 'azure-sql', 'cosmos-data'] as const;
export type Provider = (typeof PROVIDERS)[number];

export const PRINCIPAL_TYPES = ['User', 'Group'] as const;
export type PrincipalType = (typeof PRINCIPAL_TYPES)[number];

/** Who asks: an Entra principal, with the Backstage identity it came from. */
export interface Requester {
  principalId: string;
  principalType: PrincipalType;
  displayName: string;
  email?: string;
  backstageRef?: string;
}

/** What is asked for: a role at a scope of one provider. */
export interface Target {
  provider: Provider;
  scope: string;
  role: string;
}

/** Where the request came from in Backstage. */
export interface RequestContext {
  entityRef?: string;
  taskId?: string;
}

/**
 * The message itself. Its shape is closed (the model forbids unknown fields), which the type
 * enforces here; the values are checked by {@link validateAccessRequest}.
 */
export interface AccessRequestV1 {
  schemaVersion: 1;
  requestId: string;
  requester: Requester;
  target: Target;
  duration: string;
  justification: string;
  ticket?: string;
  context?: RequestContext;
}

/**
 * What the engineer chose in the form. Provider and scope may be left out when `entityRef` names an entity that
 * offers exactly one target (a database): the action takes them from its annotations.
 */
export interface AccessAsked {
  target: { provider?: string; scope?: string; role: string };
  duration: string;
  justification: string;
  ticket?: string;
  entityRef?: string;
}

export const MAX_DURATION_DAYS = 31;

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const ENTITY_REF = /^[a-z][a-z0-9-]*:[A-Za-z0-9._-]+\/[A-Za-z0-9._-]+$/;
const EMAIL = /^[^@\s]+@[^@\s]+\.[^@\s]+$/;
const TICKET = /^[A-Za-z0-9][A-Za-z0-9_./#-]*$/;
const TASK_ID = /^[A-Za-z0-9._:-]+$/;
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]/;
const ASCII = /^[\x00-\x7f]*$/;
const ARM_SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._()-]{0,89}$/;
const ARM_ROLE_NAME = /^[A-Za-z][A-Za-z0-9._()-]*( [A-Za-z0-9._()-]+)*$/;
const GCP_SCOPE = /^(projects\/[a-z][a-z0-9-]{4,28}[a-z0-9]|folders\/[0-9]{1,20}|organizations\/[0-9]{1,20})$/;
// `postgres` targets: a database the way its platform names it (shared/domain/request.py `_database_scope`).
const DATABASE = '[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}';
const AZURE_POSTGRES = new RegExp(
  '^/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[^/]+/providers/Microsoft\\.DBforPostgreSQL' +
    `/flexibleServers/[a-z0-9][a-z0-9-]{1,61}[a-z0-9]/databases/${DATABASE}$`,
  'i',
);
const CLOUD_SQL_DATABASE = new RegExp(
  `^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/instances/[a-z][a-z0-9-]{0,97}/databases/${DATABASE}$`,
);
const SERVER_DATABASE = new RegExp(`^[a-z0-9][a-z0-9-]{0,62}/${DATABASE}$`);
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;
const PG_NAME_BYTES = 63;
// `azure-sql` targets: the database's ARM id; `cosmos-data`: the account's, optionally /dbs/<db>[/colls/<c>].
const AZURE_SQL_DATABASE = new RegExp(
  '^/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[^/]+/providers/Microsoft\\.Sql' +
    '/servers/[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?/databases/[^/]+$',
  'i',
);
const COSMOS_SCOPE = new RegExp(
  '^/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[^/]+/providers/Microsoft\\.DocumentDB' +
    '/databaseAccounts/[a-z0-9](?:[a-z0-9-]{1,48}[a-z0-9])(?:/dbs/[^/]+(?:/colls/[^/]+)?)?$',
  'i',
);
const SQL_NAME_CHARS = 128;
const GCP_ROLE =
  /^(roles\/[A-Za-z][A-Za-z0-9_.]{2,99}|(projects\/[a-z][a-z0-9-]{4,28}[a-z0-9]|organizations\/[0-9]{1,20})\/roles\/[A-Za-z0-9_.]{3,64})$/;

export function isGuid(value: string): boolean {
  return GUID.test(value);
}

/**
 * The nil GUID is what an unset id field holds in most SDKs and directories; it names nobody, so jitgate
 * refuses it as a principal id (the same words as its Python model).
 */
export const NIL_GUID = '00000000-0000-0000-0000-000000000000';

/** Why `value` (lower case) is not an Entra object id, or undefined when it is one. */
export function principalIdProblem(value: string): string | undefined {
  if (!isGuid(value)) return 'must be an Entra object id (a GUID)';
  if (value === NIL_GUID) return `must not be the nil GUID ${NIL_GUID}: it names nobody`;
  return undefined;
}

/** `kind:namespace/name`, in the characters the model allows. */
export function isEntityRef(value: string): boolean {
  return ENTITY_REF.test(value);
}

export function isProvider(value: unknown): value is Provider {
  return (PROVIDERS as readonly unknown[]).includes(value);
}

/**
 * Put the message together from what was asked. Optional fields left blank in the form are
 * omitted; nothing is checked here, so that {@link validateAccessRequest} reports every problem
 * at once.
 */
export function buildAccessRequest(parts: {
  requestId: string;
  requester: Requester;
  asked: AccessAsked;
  taskId?: string;
}): AccessRequestV1 {
  const { asked } = parts;
  const ticket = blankToUndefined(asked.ticket);
  const entityRef = blankToUndefined(asked.entityRef);
  const context: RequestContext = {
    ...(entityRef !== undefined && { entityRef }),
    ...(parts.taskId !== undefined && { taskId: parts.taskId }),
  };
  return {
    schemaVersion: 1,
    requestId: parts.requestId,
    requester: parts.requester,
    target: {
      provider: asked.target?.provider as Provider,
      scope: asked.target?.scope as string,
      role: asked.target?.role,
    },
    duration: asked.duration,
    justification: asked.justification,
    ...(ticket !== undefined && { ticket }),
    ...(Object.keys(context).length > 0 && { context }),
  };
}

/** Every way `request` breaks the v1 rules; empty when jitgate's model will accept it. */
export function validateAccessRequest(request: AccessRequestV1): FieldError[] {
  const errors: FieldError[] = [];
  const check = (loc: string, problem: string | undefined) => {
    if (problem !== undefined) errors.push({ loc, msg: problem });
  };
  const { requester, target, context } = request;

  check('schemaVersion', request.schemaVersion === 1 ? undefined : 'must be 1');
  check('requestId', guidProblem(request.requestId));

  check(
    'requester.principalId',
    typeof requester.principalId === 'string' ? principalIdProblem(requester.principalId.toLowerCase()) : 'must be a GUID',
  );
  check('requester.principalType', oneOfProblem(requester.principalType, PRINCIPAL_TYPES));
  check('requester.displayName', textProblem(requester.displayName, { min: 1, max: 256, plain: true }));
  if (requester.email !== undefined) {
    check('requester.email', textProblem(requester.email, { max: 254, pattern: EMAIL, shape: 'an e-mail address' }));
  }
  if (requester.backstageRef !== undefined) {
    check('requester.backstageRef', textProblem(requester.backstageRef, { max: 256, pattern: ENTITY_REF, shape: 'an entity ref such as user:default/jane' }));
  }

  check('target.provider', oneOfProblem(target.provider, PROVIDERS));
  const provider = isProvider(target.provider) ? target.provider : undefined;
  check('target.scope', textProblem(target.scope, { min: 1, max: 512 }) ?? (provider && scopeProblem(provider, target.scope)));
  check('target.role', textProblem(target.role, { min: 1, max: 256 }) ?? (provider && roleProblem(provider, target.role)));

  check('duration', durationProblem(request.duration));
  check(
    'justification',
    textProblem(request.justification, { min: 1, max: 1000, plain: true }) ??
      (request.justification.trim() === '' ? 'justification must not be blank' : undefined),
  );
  if (request.ticket !== undefined) {
    check('ticket', textProblem(request.ticket, { min: 1, max: 64, pattern: TICKET, shape: 'a ticket id such as INC-4711' }));
  }
  if (context?.entityRef !== undefined) {
    check('context.entityRef', textProblem(context.entityRef, { max: 256, pattern: ENTITY_REF, shape: 'an entity ref such as component:default/payments-api' }));
  }
  if (context?.taskId !== undefined) {
    check('context.taskId', textProblem(context.taskId, { max: 128, pattern: TASK_ID, shape: 'a scaffolder task id' }));
  }
  return errors;
}

/** The one JSON encoding of a request, used both to size it and to send it. */
export function encodeAccessRequest(request: AccessRequestV1): string {
  return JSON.stringify(request);
}

// Forms send '' or null for a field left empty; anything else (even a non-string) is kept so
// that validation can name it.
function blankToUndefined(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string' && value.trim() === '') return undefined;
  return value as string;
}

// NB. The model counts characters as Python does (code points); `string.length` counts UTF-16
// units and would refuse a 1000-character justification that holds an emoji.
function codePoints(value: string): number {
  let count = 0;
  for (const _ of value) count += 1;
  return count;
}

function textProblem(
  value: unknown,
  rule: { min?: number; max: number; pattern?: RegExp; shape?: string; plain?: boolean },
): string | undefined {
  if (typeof value !== 'string') return 'must be a string';
  const length = codePoints(value);
  if (rule.min !== undefined && length < rule.min) return 'must not be empty';
  if (length > rule.max) return `must be at most ${rule.max} characters (it is ${length})`;
  if (rule.pattern && !rule.pattern.test(value)) return `must be ${rule.shape ?? `like ${rule.pattern}`}`;
  if (rule.plain && CONTROL.test(value)) return 'must not contain control or bidirectional formatting characters';
  return undefined;
}

function guidProblem(value: unknown): string | undefined {
  return typeof value === 'string' && isGuid(value.toLowerCase()) ? undefined : 'must be a GUID';
}

function oneOfProblem(value: unknown, allowed: readonly string[]): string | undefined {
  return allowed.includes(value as string) ? undefined : `must be one of ${allowed.join(', ')}`;
}

function durationProblem(value: unknown): string | undefined {
  if (typeof value !== 'string') return 'duration must be an ISO 8601 string such as PT2H';
  const micros = durationMicroseconds(value);
  if (micros === undefined) return `'${value}' is not an ISO 8601 duration such as PT2H or PT30M`;
  if (micros <= 0) return 'duration must be positive';
  if (micros > MAX_DURATION_DAYS * MICROSECONDS_PER_DAY) return `duration must be at most P${MAX_DURATION_DAYS}D`;
  return undefined;
}

/** `validate_scope`: one literal resource path, no wildcards, `..`, empty or trailing segments. */
function scopeProblem(provider: Provider, scope: string): string | undefined {
  if (!ASCII.test(scope)) return 'scope must be ASCII';
  if (provider === 'postgres') return databaseScopeProblem(scope);
  if (provider === 'azure-sql') {
    return (
      armScopeProblem(scope) ??
      (AZURE_SQL_DATABASE.test(scope)
        ? undefined
        : 'an Azure SQL scope must be /subscriptions/<guid>/resourceGroups/<name>/providers' +
          '/Microsoft.Sql/servers/<server>/databases/<database>')
    );
  }
  if (provider === 'cosmos-data') {
    return (
      armScopeProblem(scope) ??
      (COSMOS_SCOPE.test(scope)
        ? undefined
        : 'a Cosmos DB scope must be /subscriptions/<guid>/resourceGroups/<name>/providers' +
          '/Microsoft.DocumentDB/databaseAccounts/<account>[/dbs/<database>[/colls/<container>]]')
    );
  }
  if (provider === 'gcp-iam') {
    return GCP_SCOPE.test(scope) ? undefined : 'scope must be projects/<id>, folders/<number> or organizations/<number>';
  }
  return armScopeProblem(scope);
}

/** `_database_scope`: an Azure flexible server database, a Cloud SQL database or <server>/<database>. */
function databaseScopeProblem(scope: string): string | undefined {
  if (scope.startsWith('/')) {
    const arm = armScopeProblem(scope);
    if (arm) return arm;
    return AZURE_POSTGRES.test(scope)
      ? undefined
      : "a PostgreSQL scope starting with '/' must be /subscriptions/<guid>/resourceGroups/<name>" +
          '/providers/Microsoft.DBforPostgreSQL/flexibleServers/<server>/databases/<database>';
  }
  if (scope.startsWith('projects/')) {
    return CLOUD_SQL_DATABASE.test(scope)
      ? undefined
      : 'a Cloud SQL scope must be projects/<project>/instances/<instance>/databases/<database>';
  }
  return SERVER_DATABASE.test(scope)
    ? undefined
    : 'a PostgreSQL scope must be <server>/<database> (as named in the servers file), an Azure flexible ' +
        "server's ARM id + /databases/<database>, or projects/<p>/instances/<i>/databases/<database>";
}

function armScopeProblem(scope: string): string | undefined {
  if (!scope.startsWith('/') || scope.endsWith('/')) return "scope must start with '/' and must not end with '/'";
  const segments = scope.slice(1).split('/');
  const bad = segments.find(s => s === '' || s === '.' || s === '..' || !ARM_SEGMENT.test(s));
  if (bad !== undefined) return `scope segment '${bad}' is not allowed`;
  const lower = segments.map(s => s.toLowerCase());
  if (lower[0] === 'subscriptions') {
    if (segments.length < 2 || !isGuid(lower[1] ?? '')) {
      return 'scope must be /subscriptions/<subscription guid>[/resourceGroups/<name>[/providers/...]]';
    }
    if (segments.length > 2 && (lower[2] !== 'resourcegroups' || segments.length < 4)) {
      return 'below a subscription the scope must be /resourceGroups/<name>';
    }
    if (segments.length > 4 && (lower[4] !== 'providers' || segments.length < 8 || segments.length % 2 !== 0)) {
      return 'a resource scope must be /providers/<namespace>/<type>/<name>';
    }
    return undefined;
  }
  if (lower[0] === 'providers' && lower[1] === 'microsoft.management' && lower[2] === 'managementgroups') {
    return segments.length === 4
      ? undefined
      : 'a management group scope is /providers/Microsoft.Management/managementGroups/<name>';
  }
  return 'scope must be a subscription, resource group, resource or management group path';
}

/** `_database_role`: printable ASCII, at most `limit` bytes (one per character here), no edge spaces. */
function databaseRoleProblem(role: string, kind: string, limit: number, unit: string): string | undefined {
  if (new TextEncoder().encode(role).length > limit) return `${kind} is at most ${limit} ${unit}`;
  if (!PRINTABLE_ASCII.test(role)) return `${kind} must be printable ASCII (no control characters)`;
  if (role !== role.trim()) return `${kind} must not start or end with a space`;
  return undefined;
}

/** `validate_role`: a catalog role name or a role definition id; ASCII only (no look-alikes). */
function roleProblem(provider: Provider, role: string): string | undefined {
  if (!ASCII.test(role)) return 'role must be ASCII (look-alike characters are refused)';
  if (provider === 'postgres') return databaseRoleProblem(role, 'a PostgreSQL role name', PG_NAME_BYTES, 'bytes');
  if (provider === 'azure-sql') return databaseRoleProblem(role, 'an Azure SQL role name', SQL_NAME_CHARS, 'characters');
  if (provider === 'gcp-iam') {
    return GCP_ROLE.test(role) ? undefined : 'role must be roles/<name> or a custom role path';
  }
  if (isGuid(role.toLowerCase()) || (role.length <= 128 && ARM_ROLE_NAME.test(role))) return undefined;
  return "role must be a role name such as 'Contributor' or a role definition GUID";
}
