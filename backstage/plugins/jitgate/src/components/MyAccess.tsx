import React, { useState } from 'react';
import { Link } from 'react-router-dom';
import { useApi } from '@backstage/frontend-plugin-api';
import { jitgateApiRef, type AccessRequestView } from '../api';
import { stateLabel, timeLeft, when } from '../words';
import { Approvals, MoreTimeAsked, Problem, Target, Timeline, styles, useOutcome, usePagesSettings } from './parts';
import { useNow, usePolled } from './hooks';

export const EXTENSIONS: Array<[string, string]> = [
  ['PT30M', '30 minutes'],
  ['PT1H', '1 hour'],
  ['PT2H', '2 hours'],
  ['PT4H', '4 hours'],
];

/** My access: active grants with the time they have left ("I'm done", extend), then every request I made. */
export function MyAccess() {
  const api = useApi(jitgateApiRef);
  const { pollMs } = usePagesSettings();
  const now = useNow();
  const active = usePolled(() => api.list({ mine: true, state: ['active'], limit: 100 }), pollMs, [api]);
  const [more, setMore] = useState<AccessRequestView[]>([]);
  const [after, setAfter] = useState<string | null | undefined>(undefined);
  const requests = usePolled(() => api.list({ mine: true, limit: 25 }), pollMs, [api]);
  const outcome = useOutcome(() => {
    active.reload();
    requests.reload();
  });
  const continuation = after === undefined ? requests.value?.continuation : after;
  const showMore = async () => {
    if (!continuation) return;
    const page = await api.list({ mine: true, limit: 25, continuation });
    setMore(previous => [...previous, ...page.requests]);
    setAfter(page.continuation);
  };
  // NB. The first page is read again at every poll; older pages stay as loaded. A request that moved between them
  // (a newer one pushed it down) is shown once.
  const firstPage = requests.value?.requests ?? [];
  const seen = new Set(firstPage.map(view => view.requestId));
  const mine = [...firstPage, ...more.filter(view => !seen.has(view.requestId))];
  return (
    <section aria-labelledby="jitgate-active">
      <h2 id="jitgate-active">Active access</h2>
      <Problem error={active.error} />
      {outcome.region}
      {active.value && active.value.requests.length === 0 && <p>You hold no access through jitgate right now.</p>}
      {active.value?.requests.map(view => (
        <ActiveGrant key={view.requestId} view={view} now={now} busy={outcome.busy} act={outcome.act} />
      ))}
      <h2 id="jitgate-mine">My requests</h2>
      <Problem error={requests.error} />
      {requests.value && mine.length === 0 && <p>You have not asked for access yet.</p>}
      {mine.map(view => <MyRequest key={view.requestId} view={view} now={now} />)}
      {continuation && <button type="button" onClick={showMore}>Show older requests</button>}
    </section>
  );
}

function ActiveGrant({ view, now, busy, act }: {
  view: AccessRequestView;
  now: number;
  busy: boolean;
  act: ReturnType<typeof useOutcome>['act'];
}) {
  const api = useApi(jitgateApiRef);
  const [extension, setExtension] = useState('PT1H');
  const id = view.requestId;
  const headingId = `grant-${id}`;
  return (
    <article style={styles.card} aria-labelledby={headingId}>
      <h3 id={headingId} style={{ margin: '0 0 4px' }}><Target view={view} /></h3>
      <p style={{ margin: '4px 0', fontSize: '1.2em' }} data-testid="time-left">{timeLeft(view.expiresAt, now)}</p>
      <p style={{ margin: '4px 0' }}>Until {when(view.expiresAt, now)}</p>
      <MoreTimeAsked view={view} now={now} />
      <div style={styles.row}>
        <button type="button" disabled={busy} onClick={() => act("I'm done", () => api.revoke(id, 'done'))}>
          I'm done
        </button>
        <label htmlFor={`extend-${id}`}>More time</label>
        <select id={`extend-${id}`} value={extension} onChange={e => setExtension(e.target.value)}>
          {EXTENSIONS.map(([value, label]) => <option key={value} value={value}>{label}</option>)}
        </select>
        <button type="button" disabled={busy} onClick={() => act('Extend', () => api.extend(id, extension, ''))}>
          Extend
        </button>
        <Link to={`requests/${id}`}>Details</Link>
      </div>
    </article>
  );
}

function MyRequest({ view, now }: { view: AccessRequestView; now: number }) {
  const api = useApi(jitgateApiRef);
  const [timeline, setTimeline] = useState<AccessRequestView | undefined>();
  const [open, setOpen] = useState(false);
  const toggle = async () => {
    if (!open) setTimeline(await api.get(view.requestId));
    setOpen(!open);
  };
  return (
    <article style={styles.card} aria-label={`Request ${view.requestId}`}>
      <div style={styles.row}>
        <Target view={view} />
        <span>— {view.stateInWords || stateLabel(view.state)}</span>
      </div>
      <p style={{ margin: '4px 0' }}>Asked {when(view.createdAt, now)}</p>
      <Approvals view={view} now={now} />
      <div style={styles.row}>
        <button type="button" aria-expanded={open} onClick={toggle}>{open ? 'Hide timeline' : 'Show timeline'}</button>
        <Link to={`requests/${view.requestId}`}>Details</Link>
      </div>
      {open && timeline?.timeline && <Timeline events={timeline.timeline} now={now} />}
    </article>
  );
}
