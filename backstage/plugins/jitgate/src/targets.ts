import { parseEntityRef, stringifyEntityRef, type Entity } from '@backstage/catalog-model';

/** The annotations the scaffolder module reads too (its `targets.ts`): a provider, the scopes and roles offered. */
export const PROVIDER_ANNOTATION = 'jitgate.io/provider';
export const SCOPES_ANNOTATION = 'jitgate.io/scopes';
export const ROLES_ANNOTATION = 'jitgate.io/roles';

export interface EntityTargets {
  entityRef: string;
  provider: string;
  scopes: string[];
  roles: string[];
  database: boolean;
}

function listOf(value: string | undefined): string[] {
  return (value ?? '').split(/[,\n]/).map(item => item.trim()).filter(Boolean);
}

/** Whether the entity offers jitgate access (all three annotations set): the entity tab's filter. */
export function hasJitgateTargets(entity: Entity): boolean {
  const annotations = entity.metadata.annotations ?? {};
  return Boolean(annotations[PROVIDER_ANNOTATION]?.trim() && listOf(annotations[SCOPES_ANNOTATION]).length
    && listOf(annotations[ROLES_ANNOTATION]).length);
}

export function targetsOf(entity: Entity): EntityTargets {
  const annotations = entity.metadata.annotations ?? {};
  return {
    entityRef: stringifyEntityRef(entity),
    provider: annotations[PROVIDER_ANNOTATION]?.trim() ?? '',
    scopes: listOf(annotations[SCOPES_ANNOTATION]),
    roles: listOf(annotations[ROLES_ANNOTATION]),
    database: entity.kind.toLowerCase() === 'resource' && (entity.spec as { type?: string } | undefined)?.type === 'database',
  };
}

/**
 * The scaffolder page of a template, prefilled (`formData`, which the scaffolder's wizard reads) with this entity:
 * `/create/templates/default/jitgate-request-access?formData={"component":"component:default/payments-api"}`.
 */
export function templateLink(templateRef: string, targets: EntityTargets): string {
  const { namespace, name } = parseEntityRef(templateRef, { defaultKind: 'template', defaultNamespace: 'default' });
  const formData = targets.database ? { database: targets.entityRef } : { component: targets.entityRef };
  return `/create/templates/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}?formData=${
    encodeURIComponent(JSON.stringify(formData))}`;
}
