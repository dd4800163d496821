import { createHash, randomUUID } from 'node:crypto';
import type { Entity } from '@backstage/catalog-model';
import type { BackstageCredentials } from '@backstage/backend-plugin-api';
import { createTemplateAction } from '@backstage/plugin-scaffolder-node';
import {
  buildAccessRequest,
  encodeAccessRequest,
  PROVIDERS,
  validateAccessRequest,
  type AccessAsked,
  type AccessRequestV1,
} from './accessRequest';
import { InvalidAccessRequest } from './errors';
import { requesterOf } from './requester';
import type { AccessRequestSender } from './sender';
import { resolveTarget } from './targets';

export const REQUEST_ACCESS_ACTION_ID = 'jitgate:access:request';

export interface RequestAccessActionOptions {
  sender: AccessRequestSender;
  /** Builds the link to a request's state from its id. */
  statusUrlOf: (requestId: string) => string;
  /**
   * Reads the entity a request names (the catalog service), to take a database's provider and scope from its
   * annotations when the template leaves them out. Without it, every request must name its target whole.
   */
  catalog?: {
    getEntityByRef(entityRef: string, options: { credentials: BackstageCredentials }): Promise<Entity | undefined>;
  };
}

/**
 * `jitgate:access:request`: ask jitgate for a role at a scope for a while. Builds an access
 * request v1 for the user running the template, checks it against the v1 rules and hands it
 * to the sender. A dry run checks everything and sends nothing.
 */
export function createRequestAccessAction({ sender, statusUrlOf, catalog }: RequestAccessActionOptions) {
  return createTemplateAction({
    id: REQUEST_ACCESS_ACTION_ID,
    description:
      'Asks jitgate for time-boxed, approval-gated access to a cloud role. The requester is the signed-in catalog User, ' +
      "identified by its 'graph.microsoft.com/user-id' annotation.",
    supportsDryRun: true,
    examples: [
      {
        description: 'Ask for Contributor on a resource group for two hours',
        example: [
          'steps:',
          '  - id: request',
          '    name: Request access',
          '    action: jitgate:access:request',
          '    input:',
          '      target:',
          '        provider: azure-rbac',
          '        scope: /subscriptions/3d6a4adc-4ac3-43f4-a05a-2238e5eec649/resourceGroups/rg-payments-prod',
          '        role: Contributor',
          '      duration: PT2H',
          '      justification: Rotate the payments DB firewall rule for INC-4711',
          '      ticket: INC-4711',
          '      entityRef: component:default/payments-api',
        ].join('\n'),
      },
      {
        description: 'Ask for a role in a database from the catalog: its annotations name the provider and scope',
        example: [
          'steps:',
          '  - id: request',
          '    name: Request access',
          '    action: jitgate:access:request',
          '    input:',
          '      target:',
          '        role: payments_read',
          '      duration: PT1H',
          '      justification: Read the payments ledger for INC-4711',
          '      ticket: INC-4711',
          '      entityRef: resource:default/payments-db',
        ].join('\n'),
      },
    ],
    schema: {
      input: {
        target: z =>
          z
            .object({
              provider: z
                .enum(PROVIDERS)
                .optional()
                .describe('Where the role lives; left out (with scope) to take it from the entity entityRef names'),
              scope: z
                .string()
                .optional()
                .describe(
                  'ARM scope path; projects/<id> | folders/<n> | organizations/<n> for gcp-iam; a database for postgres ' +
                    'and azure-sql; a Cosmos DB account, database or container for cosmos-data. Left out (with ' +
                    'provider) for an entity that names one target, such as a database',
                ),
              role: z.string().describe('Role name (Contributor, roles/viewer) or role definition id'),
            })
            .describe('The role asked for, at which scope, of which provider'),
        duration: z => z.string().describe('How long, as an ISO 8601 duration such as PT2H; at most P31D'),
        justification: z => z.string().describe('Why, for the approvers and the audit trail (at most 1000 characters)'),
        ticket: z => z.string().optional().describe('Change or incident ticket, such as INC-4711 (at most 64 characters)'),
        entityRef: z =>
          z
            .string()
            .optional()
            .describe(
              'The catalog entity the access is for, such as component:default/payments-api; for a database ' +
                '(resource:default/payments-db) its annotations give the provider and scope',
            ),
      },
      output: {
        requestId: z => z.string().describe('The id jitgate knows the request by'),
        statusUrl: z => z.string().describe("Link to the request's state: GET /api/access-requests/{id}"),
        message: z => z.record(z.unknown()).optional().describe('Dry run only: the message that would have been sent'),
      },
    },
    async handler(ctx) {
      const requester = requesterOf(ctx.user);
      const lookUp = catalog
        ? async (entityRef: string) => catalog.getEntityByRef(entityRef, { credentials: await ctx.getInitiatorCredentials() })
        : undefined;
      const asked: AccessAsked = await resolveTarget(ctx.input, lookUp);
      // NB. A task resumed after a backend restart runs this step again. The checkpoint keeps the
      // first requestId, so the resend is the same request to jitgate rather than a second one.
      const requestId = await ctx.checkpoint({ key: `jitgate.requestId.${digestOf(asked)}`, fn: () => randomUUID() });
      const request = buildAccessRequest({ requestId, requester, asked, taskId: ctx.task.id });
      const problems = validateAccessRequest(request);
      if (problems.length > 0) {
        throw new InvalidAccessRequest(problems, REQUEST_ACCESS_ACTION_ID);
      }
      const statusUrl = statusUrlOf(requestId);
      const summary = `${request.target.role} at ${request.target.scope} (${request.target.provider}) for ${request.duration}`;

      if (ctx.isDryRun) {
        ctx.logger.info(`Dry run: would send access request ${requestId} for ${summary} to ${sender.destination}`);
        ctx.output('requestId', requestId);
        ctx.output('statusUrl', statusUrl);
        ctx.output('message', toJson(request));
        return;
      }
      await sender.send(request, { signal: ctx.signal });
      ctx.logger.info(`Sent access request ${requestId} for ${summary} to ${sender.destination}; follow it at ${statusUrl}`);
      ctx.output('requestId', requestId);
      ctx.output('statusUrl', statusUrl);
    },
  });
}

function digestOf(asked: AccessAsked): string {
  const { target, duration, justification, ticket, entityRef } = asked;
  const fields = [target?.provider, target?.scope, target?.role, duration, justification, ticket, entityRef];
  return createHash('sha256').update(JSON.stringify(fields)).digest('hex').slice(0, 16);
}

function toJson(request: AccessRequestV1): Record<string, unknown> {
  return JSON.parse(encodeAccessRequest(request));
}
