import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BackstageCredentials } from '@backstage/backend-plugin-api';
import {
  DefaultNamespaceEntityPolicy,
  EntityPolicies,
  FieldFormatEntityPolicy,
  NoForeignRootFieldsEntityPolicy,
  SchemaValidEntityPolicy,
  componentEntityV1alpha1Validator,
  groupEntityV1alpha1Validator,
  locationEntityV1alpha1Validator,
  resourceEntityV1alpha1Validator,
  stringifyEntityRef,
  userEntityV1alpha1Validator,
  type Entity,
} from '@backstage/catalog-model';
import { templateEntityV1beta3Validator } from '@backstage/plugin-scaffolder-common';
import { parseAllDocuments } from 'yaml';

/** The example database entities the module ships (examples/databases.yaml). */
export const EXAMPLE_DATABASES_PATH = join(__dirname, '..', '..', 'examples', 'databases.yaml');

export function exampleDatabases(): Entity[] {
  return parseAllDocuments(readFileSync(EXAMPLE_DATABASES_PATH, 'utf8')).map(doc => doc.toJS() as Entity);
}

/** A catalog that answers from a list of entities and records who asked for what. */
export class RecordingCatalog {
  readonly asked: { entityRef: string; credentials: BackstageCredentials }[] = [];

  constructor(private readonly entities: Entity[]) {}

  async getEntityByRef(entityRef: string, options: { credentials: BackstageCredentials }): Promise<Entity | undefined> {
    this.asked.push({ entityRef, credentials: options.credentials });
    return this.entities.find(entity => stringifyEntityRef(entity) === entityRef);
  }
}

// What the catalog backend enforces on every entity it ingests (its default policies), then the kind's own rules.
const catalogPolicies = EntityPolicies.allOf([
  new DefaultNamespaceEntityPolicy(),
  new NoForeignRootFieldsEntityPolicy(),
  new FieldFormatEntityPolicy(),
  new SchemaValidEntityPolicy(),
]);

const KIND_VALIDATORS = {
  Component: componentEntityV1alpha1Validator,
  Group: groupEntityV1alpha1Validator,
  Location: locationEntityV1alpha1Validator,
  Resource: resourceEntityV1alpha1Validator,
  Template: templateEntityV1beta3Validator,
  User: userEntityV1alpha1Validator,
};

/** Resolves when the catalog would ingest `entity` (its policies, then its kind's validator); rejects with why not. */
export async function acceptedByTheCatalog(entity: Entity): Promise<void> {
  const enforced = await catalogPolicies.enforce(entity);
  if (!enforced) throw new Error('the catalog policies dropped the entity');
  const validator = KIND_VALIDATORS[enforced.kind as keyof typeof KIND_VALIDATORS];
  if (!validator || !(await validator.check(enforced))) throw new Error(`no ${enforced.kind} validator accepts it`);
}
