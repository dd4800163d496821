import React from 'react';
import { act, fireEvent, screen, waitFor, within } from '@testing-library/react';
import { createExtensionTester, renderInTestApp, renderTestApp } from '@backstage/frontend-test-utils';
import plugin, { jitgateAccessPage } from './alpha';
import { jitgateApiRef } from './api';
import { ALICE, FakeJitgate, JANE, view } from './testing/fakeJitgate';

const NOW = Date.parse('2026-12-06T09:00:00Z');

const CONFIG = { jitgate: { pages: { pollSeconds: 5 } } };

function renderPage(fake: FakeJitgate, path = '/jitgate') {
  const apis = [[jitgateApiRef, fake]] as const;
  const tester = createExtensionTester(jitgateAccessPage, { apis });
  return renderInTestApp(tester.reactElement(), { apis, config: CONFIG, mountPath: '/jitgate',
                                                  initialRouteEntries: [path] });
}

afterEach(() => jest.useRealTimers());

test('the plugin serves its page at /jitgate and brings an entity tab', async () => {
  const fake = new FakeJitgate();
  renderTestApp({ features: [plugin], apis: [[jitgateApiRef, fake]], config: CONFIG, initialRouteEntries: ['/jitgate'] });
  expect(await screen.findByRole('tab', { name: 'My access' })).toHaveAttribute('aria-selected', 'true');
  expect(plugin.getExtension('entity-content:jitgate')).toBeDefined();
  expect(plugin.getExtension('api:jitgate')).toBeDefined();
});

test('My access counts an active grant down without a reload, and "I\'m done" ends it', async () => {
  jest.useFakeTimers({ now: NOW, doNotFake: ['queueMicrotask', 'nextTick'] });
  const fake = new FakeJitgate();
  fake.requests = [view('r-active', 'active', { expiresAt: '2026-12-06T11:30:00Z' })];
  renderPage(fake);
  const grant = await screen.findByRole('article', { name: /Reader on/ });
  // NB. Finding the element lets a few fake seconds pass, hence either minute.
  expect(within(grant).getByTestId('time-left')).toHaveTextContent(/^2 hours (30|29) minutes left$/);
  // WHEN an hour passes, THEN the time left moves on by itself
  await act(async () => { jest.advanceTimersByTime(3_600_000); });
  expect(within(grant).getByTestId('time-left')).toHaveTextContent(/^1 hour (30|29) minutes left$/);
  // WHEN the requester is done
  fireEvent.click(within(grant).getByRole('button', { name: "I'm done" }));
  await screen.findByText("I'm done: revoked (done)");
  expect(fake.calls).toContainEqual(['revoke', 'r-active', 'done']);
  // THEN the list, read again, no longer shows it
  await waitFor(() => expect(screen.queryByRole('article', { name: /Reader on/ })).toBeNull());
  expect(screen.getByText('You hold no access through jitgate right now.')).toBeInTheDocument();
});

test('a state that changes in jitgate shows up at the next poll', async () => {
  jest.useFakeTimers({ now: NOW, doNotFake: ['queueMicrotask', 'nextTick'] });
  const fake = new FakeJitgate();
  renderPage(fake);
  await screen.findByText('You hold no access through jitgate right now.');
  fake.requests = [view('r-new', 'active', { expiresAt: '2026-12-06T11:00:00Z' })];
  await act(async () => { jest.advanceTimersByTime(5_000); });
  expect(await screen.findByRole('article', { name: /Reader on/ })).toHaveTextContent('2 hours left');
});

test('an extension the rule refuses is told in jitgate\'s words', async () => {
  const fake = new FakeJitgate();
  fake.requests = [view('r-active', 'active', { expiresAt: new Date(Date.now() + 3_600_000).toISOString() })];
  renderPage(fake);
  const grant = await screen.findByRole('article', { name: /Reader on/ });
  fireEvent.change(within(grant).getByLabelText('More time'), { target: { value: 'PT2H' } });
  fireEvent.click(within(grant).getByRole('button', { name: 'Extend' }));
  expect(await screen.findByRole('status')).toHaveTextContent(
    'Extend refused: body.duration: 9 hours is longer than this rule allows (8 hours)');
  expect(fake.calls).toContainEqual(['extend', 'r-active', 'PT2H', '']);
});

test('Waiting for me approves with a comment and denies only with one', async () => {
  const fake = new FakeJitgate();
  fake.requests = [view('r-wait', 'pending_approval', {
    approval: { required: 2, approverGroups: ['platform-approvers'], youMay: true, whyNot: '',
                given: [{ approverId: ALICE, at: '2026-12-06T08:30:00Z', comment: 'fine by me' }] },
  })];
  renderPage(fake, '/jitgate?tab=waiting');
  const request = await screen.findByRole('article', { name: /Reader on/ });
  expect(request).toHaveTextContent('Approvals: 1 of 2, 1 more needed (from platform-approvers)');
  expect(request).toHaveTextContent(`Approved by ${ALICE}`);
  expect(request).toHaveTextContent(`Jane Doe (${JANE})`);
  const deny = within(request).getByRole('button', { name: 'Deny' });
  expect(deny).toBeDisabled();
  fireEvent.change(within(request).getByLabelText('Comment (required to deny)'), { target: { value: 'ok for INC-4711' } });
  expect(deny).toBeEnabled();
  fireEvent.click(within(request).getByRole('button', { name: 'Approve' }));
  await screen.findByText('Approve: approved; granting now');
  expect(fake.calls).toContainEqual(['approve', 'r-wait', 'ok for INC-4711']);
});

test('Audit searches, verifies the chains and exports what it found as CSV', async () => {
  const fake = new FakeJitgate();
  fake.events = [{
    id: 'r1:000000', requestId: 'r1', seq: 0, type: 'request.received', at: '2026-12-06T08:00:00Z',
    actor: { principalId: JANE, kind: 'user' }, data: {}, prevHash: '', hash: 'abc',
  }];
  renderPage(fake, '/jitgate?tab=audit');
  fireEvent.change(await screen.findByLabelText('Person (object id)'), { target: { value: JANE } });
  fireEvent.change(screen.getByLabelText('From (UTC)'), { target: { value: '2026-12-06T07:00' } });
  fireEvent.click(screen.getByRole('button', { name: 'Search' }));
  expect(await screen.findByRole('cell', { name: 'Request received' })).toBeInTheDocument();
  expect(fake.calls).toContainEqual(['auditEvents', expect.objectContaining({ principalId: JANE,
    since: '2026-12-06T07:00:00Z' })]);
  const csv = screen.getByRole('link', { name: 'Export 1 events as CSV' });
  expect(decodeURIComponent(csv.getAttribute('href')!)).toContain('r1,0,request.received');
  fireEvent.click(screen.getByRole('button', { name: 'Verify every chain' }));
  expect(await screen.findByText(/Verified: 3 chains \(17 events\), none broken/)).toBeInTheDocument();
});

test('Audit tells someone who is not an auditor why not', async () => {
  const fake = new FakeJitgate();
  fake.refuseAudit = true;
  renderPage(fake, '/jitgate?tab=audit');
  fireEvent.click(await screen.findByRole('button', { name: 'Search' }));
  expect(await screen.findByRole('alert')).toHaveTextContent('only for callers with the Jit.Auditor');
});

test('a request has its own page at /jitgate/requests/<id>, where Teams cards link', async () => {
  const fake = new FakeJitgate();
  fake.requests = [view('r-page', 'pending_approval', {
    approval: { required: 1, approverGroups: ['platform-approvers'], given: [], youMay: false,
                whyNot: 'you cannot approve or deny your own request',
                stillMay: [{ principalId: ALICE, displayName: 'Alice' }] },
    timeline: [{ id: 'r-page:000000', requestId: 'r-page', seq: 0, type: 'request.received',
                 at: '2026-12-06T08:00:00Z', actor: { principalId: JANE, kind: 'user' }, data: {}, prevHash: '',
                 hash: 'h' }],
  })];
  renderPage(fake, '/jitgate/requests/r-page');
  expect(await screen.findByRole('heading', { name: 'Request r-page' })).toBeInTheDocument();
  expect(await screen.findByText(`Still may approve: Alice (${ALICE})`)).toBeInTheDocument();
  expect(within(screen.getByRole('list', { name: 'Timeline' })).getByText(/Request received/)).toBeInTheDocument();
  expect(screen.queryByRole('button', { name: 'Approve' })).toBeNull();
});

test('more time a rule wants approved waits for me like a request', async () => {
  const fake = new FakeJitgate();
  fake.requests = [view('r-more', 'active', {
    expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    approval: { required: 2, approverGroups: ['platform-approvers'], given: [], youMay: true, whyNot: '' },
    extension: { until: '2026-12-06T12:00:00Z', askedAt: '2026-12-06T09:00:00Z', reason: 'the migration runs long',
                 rule: 'prod-contributor', requiredApprovals: 2, approverGroups: ['platform-approvers'],
                 approvals: [{ approverId: ALICE, at: '2026-12-06T09:01:00Z', comment: '' }] },
  })];
  renderPage(fake, '/jitgate?tab=waiting');
  const card = await screen.findByRole('article', { name: /Reader on/ });
  expect(within(card).getByTestId('more-time')).toHaveTextContent(
    /More time asked: until 2026-12-06 12:00 UTC .*“the migration runs long”.*approvals 1 of 2 from platform-approvers, by/);
  fireEvent.click(within(card).getByRole('button', { name: 'Approve' }));
  await screen.findByText('Approve: approved; granting now');
  expect(fake.calls).toContainEqual(['approve', 'r-more', '']);
});
