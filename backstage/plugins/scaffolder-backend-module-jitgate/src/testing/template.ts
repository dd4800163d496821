import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';

/** A template of backstage/templates, parsed, with ways to find its fields and steps. */
export function loadTemplate(name: string) {
  const template = parse(readFileSync(join(__dirname, '..', '..', '..', '..', 'templates', name, 'template.yaml'), 'utf8'));
  const pages: { properties: Record<string, any> }[] = template.spec.parameters;
  return {
    template,
    pages,
    field: (fieldName: string) => pages.map(page => page.properties[fieldName]).find(Boolean),
    pageOf: (fieldName: string) => pages.findIndex(page => fieldName in page.properties),
    step: (id: string) => template.spec.steps.find((s: { id: string }) => s.id === id),
  };
}

/**
 * Renders `${{ expression }}` values from `filled`, as the scaffolder would once the form is filled; an expression
 * it does not know fails the test, so a template that starts reading something new is noticed.
 */
export function renderWith(filled: Record<string, string>) {
  const render = (value: unknown): unknown => {
    if (typeof value === 'string') {
      const match = /^\$\{\{\s*(.+?)\s*\}\}$/.exec(value);
      if (!match) return value;
      const expression = match[1]!;
      if (!(expression in filled)) throw new Error(`the template uses an expression this test does not know: ${expression}`);
      return filled[expression];
    }
    if (Array.isArray(value)) return value.map(render);
    if (typeof value === 'object' && value !== null) {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, render(v)]));
    }
    return value;
  };
  return render;
}
