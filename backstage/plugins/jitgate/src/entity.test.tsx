import React from 'react';
import { screen, within } from '@testing-library/react';
import { renderInTestApp } from '@backstage/frontend-test-utils';
import { EntityProvider } from '@backstage/plugin-catalog-react';
import type { Entity } from '@backstage/catalog-model';
import { jitgateApiRef } from './api';
import { rootRouteRef } from './routes';
import { EntityAccessContent } from './components/EntityAccessContent';
import { hasJitgateTargets, targetsOf, templateLink } from './targets';
import { jitgatePlugin, JitgatePage, EntityJitgateContent } from './index';
import { FakeJitgate, JANE, SCOPE, view } from './testing/fakeJitgate';

const COMPONENT: Entity = {
  apiVersion: 'backstage.io/v1alpha1',
  kind: 'Component',
  metadata: {
    name: 'web',
    annotations: { 'jitgate.io/provider': 'local', 'jitgate.io/scopes': `${SCOPE}\n/subscriptions/x/resourceGroups/y`,
                   'jitgate.io/roles': 'Reader, Contributor' },
  },
  spec: { type: 'service', owner: 'team-web', lifecycle: 'production' },
};

test('the tab shows on entities with all three annotations only', () => {
  expect(hasJitgateTargets(COMPONENT)).toBe(true);
  const withoutRoles = { ...COMPONENT, metadata: { name: 'web', annotations: { 'jitgate.io/provider': 'local',
    'jitgate.io/scopes': SCOPE } } };
  expect(hasJitgateTargets(withoutRoles)).toBe(false);
});

test('the request button opens the template with the entity filled in', () => {
  expect(templateLink('template:default/jitgate-request-access', targetsOf(COMPONENT))).toBe(
    `/create/templates/default/jitgate-request-access?formData=${encodeURIComponent('{"component":"component:default/web"}')}`);
  const database: Entity = { ...COMPONENT, kind: 'Resource', spec: { type: 'database' } };
  expect(templateLink('jitgate-request-database-access', targetsOf(database))).toContain(
    encodeURIComponent('{"database":"resource:default/web"}'));
});

test('the entity tab lists who holds access to its scopes now and who waits', async () => {
  const fake = new FakeJitgate();
  fake.requests = [
    view('r-active', 'active', { expiresAt: new Date(Date.now() + 2 * 3_600_000 + 30_000).toISOString() }),
    view('r-waiting', 'pending_approval'),
  ];
  await renderInTestApp(
    <EntityProvider entity={COMPONENT}><EntityAccessContent /></EntityProvider>,
    { apis: [[jitgateApiRef, fake]], mountedRoutes: { '/access-page': rootRouteRef } },
  );
  const table = await screen.findByRole('table');
  const rows = within(table).getAllByRole('row');
  expect(rows).toHaveLength(3);
  expect(rows[1]).toHaveTextContent(`Jane Doe (${JANE})`);
  expect(rows[1]).toHaveTextContent('2 hours left');
  expect(rows[2]).toHaveTextContent('waiting for approval');
  expect(within(rows[1]).getByRole('link', { name: 'Details' })).toHaveAttribute('href', '/access-page/requests/r-active');
  // one question per scope the entity offers, for the grants in force and those on their way
  const lists = fake.calls.filter(call => call[0] === 'list').map(call => call[1]);
  expect(lists).toEqual([
    { provider: 'local', scope: SCOPE, state: ['active', 'pending_approval', 'approved'], limit: 100 },
    { provider: 'local', scope: '/subscriptions/x/resourceGroups/y', state: ['active', 'pending_approval', 'approved'],
      limit: 100 },
  ]);
  expect(screen.getByRole('link', { name: 'Request access' }).getAttribute('href')).toContain('jitgate-request-access');
});

test('the legacy frontend system gets a plugin, a routable page and an entity content component', () => {
  expect(jitgatePlugin.getId()).toBe('jitgate');
  expect(JitgatePage).toBeDefined();
  expect(EntityJitgateContent).toBeDefined();
});
