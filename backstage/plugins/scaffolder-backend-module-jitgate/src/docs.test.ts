import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { Entity } from '@backstage/catalog-model';
import { parseAllDocuments } from 'yaml';
import { acceptedByTheCatalog } from './testing/catalog';

// Every catalog entity the docs show or the repository ships reaches the catalog: the YAML blocks of the READMEs and
// docs/, and the YAML files under backstage/ (templates, examples), each run through the catalog's own policies and
// its kind's validator. A README example the catalog refuses (a relative link, once) never reaches an adopter's app.

const REPO = join(__dirname, '..', '..', '..', '..');
const MARKDOWN = [
  join(REPO, 'README.md'),
  join(REPO, 'backstage', 'README.md'),
  ...readdirSync(join(REPO, 'docs')).filter(name => name.endsWith('.md')).map(name => join(REPO, 'docs', name)),
];

function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap(entry => {
    if (entry.name === 'node_modules' || entry.name === 'dist') return [];
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return yamlFiles(path);
    return /\.ya?ml$/.test(entry.name) ? [path] : [];
  });
}

/** `[where, entity]` for every document that is a catalog entity (it has an apiVersion and a kind). */
function entitiesIn(where: string, text: string): [string, Entity][] {
  return parseAllDocuments(text)
    .map(doc => doc.toJS() as unknown)
    .filter((doc): doc is Entity => typeof doc === 'object' && doc !== null && 'apiVersion' in doc && 'kind' in doc)
    .map(entity => [`${where}: ${entity.kind} ${entity.metadata?.name}`, entity]);
}

const EXAMPLES: [string, Entity][] = [
  ...MARKDOWN.flatMap(path =>
    // Blocks inside a list item are indented: the block's lines lose the fence's indent.
    [...readFileSync(path, 'utf8').matchAll(/^( *)```ya?ml\n([\s\S]*?)^\1```/gm)].flatMap(([, indent, body]) =>
      entitiesIn(relative(REPO, path), body!.replace(new RegExp(`^${indent}`, 'gm'), '')),
    ),
  ),
  ...yamlFiles(join(REPO, 'backstage')).flatMap(path => entitiesIn(relative(REPO, path), readFileSync(path, 'utf8'))),
];

describe('the example entities of the docs and the repository', () => {
  it("include the README's own, the templates and the shipped examples", () => {
    const where = new Set(EXAMPLES.map(([name]) => name.split(':')[0]));
    expect([...where]).toEqual(
      expect.arrayContaining([
        'backstage/README.md',
        'backstage/templates/request-access/template.yaml',
        'backstage/templates/request-database-access/template.yaml',
        'backstage/plugins/scaffolder-backend-module-jitgate/examples/databases.yaml',
      ]),
    );
  });

  it.each(EXAMPLES)('%s is accepted by the catalog', async (_, entity) => {
    await expect(acceptedByTheCatalog(entity)).resolves.toBeUndefined();
  });
});
