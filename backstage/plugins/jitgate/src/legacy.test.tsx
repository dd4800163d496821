import React from 'react';
import { screen, within } from '@testing-library/react';
import { TestApiProvider, renderInTestApp } from '@backstage/test-utils';
import { jitgateApiRef } from './api';
import { JitgatePage } from './index';
import { Route, Routes } from 'react-router-dom';
import { FakeJitgate, view } from './testing/fakeJitgate';

test('the legacy export renders the same page in a legacy Backstage app', async () => {
  const fake = new FakeJitgate();
  fake.requests = [view('r-legacy', 'active', { expiresAt: new Date(Date.now() + 3_600_000 + 30_000).toISOString() })];
  await renderInTestApp(
    <TestApiProvider apis={[[jitgateApiRef, fake]]}>
      <Routes>
        <Route path="/jitgate/*" element={<JitgatePage />} />
      </Routes>
    </TestApiProvider>,
    { routeEntries: ['/jitgate'] },
  );
  const grant = await screen.findByRole('article', { name: /Reader on/ });
  expect(within(grant).getByTestId('time-left')).toHaveTextContent('1 hour left');
  expect(within(grant).getByRole('link', { name: 'Details' })).toHaveAttribute('href', '/jitgate/requests/r-legacy');
});
