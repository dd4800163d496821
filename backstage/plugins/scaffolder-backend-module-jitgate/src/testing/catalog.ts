import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BackstageCredentials } from '@backstage/backend-plugin-api';
import { stringifyEntityRef, type Entity } from '@backstage/catalog-model';
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
