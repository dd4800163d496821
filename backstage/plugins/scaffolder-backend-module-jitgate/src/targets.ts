/**
 * What a component lets people ask for, read from its catalog annotations, and the small route
 * that feeds the template's scope and role pickers with it. Stock Backstage form fields cannot
 * list the values of an annotation, so the pickers (`SelectFieldFromApi`) read this route.
 */
import type { HttpAuthService } from '@backstage/backend-plugin-api';
import { parseEntityRef, stringifyEntityRef, type Entity } from '@backstage/catalog-model';
import type { CatalogService } from '@backstage/plugin-catalog-node';
import express from 'express';
import { isEntityRef, type AccessAsked } from './accessRequest';
import { InvalidAccessRequest } from './errors';

/**
 * Which provider the entity's scopes belong to: azure-rbac, azure-pim, gcp-iam, local, postgres, azure-sql or
 * cosmos-data. A component offers several scopes; a database (a Resource of type `database`) names exactly one,
 * itself, so that its annotations name one jitgate target.
 */
export const PROVIDER_ANNOTATION = 'jitgate.io/provider';
/** The scopes one may ask for, separated by commas or new lines. */
export const SCOPES_ANNOTATION = 'jitgate.io/scopes';
/** The roles one may ask for, separated by commas or new lines. */
export const ROLES_ANNOTATION = 'jitgate.io/roles';

/** Mounted below the scaffolder's base URL: `/api/scaffolder/jitgate/targets?entityRef=...`. */
export const TARGETS_PATH = '/jitgate/targets';

export interface AccessTargets {
  entityRef: string;
  provider: string;
  scopes: string[];
  roles: string[];
}

/** The targets `entity` offers, or the annotations it lacks. */
export function accessTargetsOf(entity: Entity): AccessTargets | { missing: string[] } {
  const annotations = entity.metadata.annotations ?? {};
  const provider = annotations[PROVIDER_ANNOTATION]?.trim() ?? '';
  const scopes = listOf(annotations[SCOPES_ANNOTATION]);
  const roles = listOf(annotations[ROLES_ANNOTATION]);
  const missing = [
    ...(provider ? [] : [PROVIDER_ANNOTATION]),
    ...(scopes.length ? [] : [SCOPES_ANNOTATION]),
    ...(roles.length ? [] : [ROLES_ANNOTATION]),
  ];
  return missing.length ? { missing } : { entityRef: stringifyEntityRef(entity), provider, scopes, roles };
}

/**
 * The target a request names: as given, or (when the template leaves provider and scope out) taken from
 * the entity `entityRef` names, which must offer exactly one scope (a database) and the role asked for. The entity
 * is read with `lookUp`, which reads the catalog as the person running the template.
 */
export async function resolveTarget(
  asked: AccessAsked,
  lookUp: ((entityRef: string) => Promise<Entity | undefined>) | undefined,
): Promise<AccessAsked> {
  const { provider, scope, role } = asked.target ?? ({} as Partial<AccessAsked['target']>);
  // NB. Half a target is the template's own, and the request's rules say what is missing from it.
  if (given(provider) || given(scope)) return asked;
  const refuse = (loc: string, msg: string): never => {
    throw new InvalidAccessRequest([{ loc, msg }], 'jitgate:access:request');
  };
  const entityRef = asked.entityRef;
  if (!given(entityRef)) {
    return refuse('entityRef', 'names no entity: without target.provider and target.scope the target is the one the entity names');
  }
  if (!lookUp) return refuse('entityRef', 'this action was set up without the catalog, so it cannot read the entity');
  const entity = await lookUp(entityRef);
  if (!entity) return refuse('entityRef', `${entityRef} is not in the catalog, or you may not see it`);
  const targets = accessTargetsOf(entity);
  if ('missing' in targets) return refuse('entityRef', `${entityRef} offers no jitgate access: it lacks ${targets.missing.join(', ')}`);
  if (targets.scopes.length !== 1) {
    return refuse('entityRef', `${entityRef} offers ${targets.scopes.length} scopes; name the one you need in target.scope`);
  }
  if (!targets.roles.includes(role)) {
    return refuse('target.role', `'${role}' is not a role ${entityRef} offers (${targets.roles.join(', ')})`);
  }
  return { ...asked, target: { provider: targets.provider, scope: targets.scopes[0]!, role } };
}

/**
 * `GET /jitgate/targets?entityRef=component:default/payments-api` → {@link AccessTargets}.
 * The catalog is read with the caller's own credentials, so it shows only what they may see.
 */
export function createTargetsRouter(deps: { catalog: CatalogService; httpAuth: HttpAuthService }): express.Router {
  const router = express.Router();
  router.get(TARGETS_PATH, async (req, res, next) => {
    try {
      const raw = req.query.entityRef;
      let entityRef: string;
      try {
        if (typeof raw !== 'string' || raw === '') throw new Error('missing');
        entityRef = stringifyEntityRef(parseEntityRef(raw, { defaultKind: 'component', defaultNamespace: 'default' }));
        if (!isEntityRef(entityRef)) throw new Error('malformed');
      } catch {
        res.status(400).json(problem('InputError', 'Query parameter entityRef must be an entity ref such as component:default/payments-api'));
        return;
      }
      const credentials = await deps.httpAuth.credentials(req);
      const entity = await deps.catalog.getEntityByRef(entityRef, { credentials });
      if (!entity) {
        res.status(404).json(problem('NotFoundError', `${entityRef} is not in the catalog`));
        return;
      }
      const targets = accessTargetsOf(entity);
      if ('missing' in targets) {
        res.status(404).json(problem('NotFoundError', `${entityRef} offers no jitgate access: it lacks ${targets.missing.join(', ')}`));
        return;
      }
      res.json(targets);
    } catch (error) {
      next(error);
    }
  });
  return router;
}

function given(value: unknown): value is string {
  return typeof value === 'string' && value.trim() !== '';
}

function listOf(value: string | undefined): string[] {
  const items = (value ?? '').split(/[,\n]/).map(item => item.trim()).filter(item => item !== '');
  return [...new Set(items)];
}

function problem(name: string, message: string) {
  return { error: { name, message } };
}
