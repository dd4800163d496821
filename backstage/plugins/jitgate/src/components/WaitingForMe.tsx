import React, { useState } from 'react';
import { Link } from 'react-router-dom';
import { useApi } from '@backstage/frontend-plugin-api';
import { jitgateApiRef, type AccessRequestView } from '../api';
import { Approvals, Facts, MoreTimeAsked, Problem, Target, styles, useOutcome, usePagesSettings } from './parts';
import { useNow, usePolled } from './hooks';

/** Waiting for me: the requests I may approve or deny now, by the same rules as in Teams. */
export function WaitingForMe() {
  const api = useApi(jitgateApiRef);
  const { pollMs } = usePagesSettings();
  const now = useNow(15_000);
  const waiting = usePolled(() => api.list({ waitingForMe: true, limit: 100 }), pollMs, [api]);
  const outcome = useOutcome(waiting.reload);
  return (
    <section aria-labelledby="jitgate-waiting">
      <h2 id="jitgate-waiting">Waiting for your approval</h2>
      <Problem error={waiting.error} />
      {outcome.region}
      {waiting.value && waiting.value.requests.length === 0 && <p>Nothing waits for your approval.</p>}
      {waiting.value?.requests.map(view => (
        <Decision key={view.requestId} view={view} now={now} busy={outcome.busy} act={outcome.act} />
      ))}
    </section>
  );
}

export function Decision({ view, now, busy, act }: {
  view: AccessRequestView;
  now: number;
  busy: boolean;
  act: ReturnType<typeof useOutcome>['act'];
}) {
  const api = useApi(jitgateApiRef);
  const [comment, setComment] = useState('');
  const id = view.requestId;
  const headingId = `decide-${id}`;
  return (
    <article style={styles.card} aria-labelledby={headingId}>
      <h3 id={headingId} style={{ margin: '0 0 4px' }}><Target view={view} /></h3>
      <Facts view={view} now={now} />
      <MoreTimeAsked view={view} now={now} />
      <Approvals view={view} now={now} />
      <div style={styles.row}>
        <label htmlFor={`comment-${id}`}>Comment (required to deny)</label>
        <input id={`comment-${id}`} type="text" maxLength={500} size={40} value={comment}
               onChange={e => setComment(e.target.value)} />
      </div>
      <div style={styles.row}>
        <button type="button" disabled={busy || !view.approval.youMay}
                onClick={() => act('Approve', () => api.approve(id, comment.trim()))}>
          Approve
        </button>
        <button type="button" disabled={busy || !view.approval.youMay || !comment.trim()}
                onClick={() => act('Deny', () => api.deny(id, comment.trim()))}>
          Deny
        </button>
        <Link to={`requests/${id}`}>Details</Link>
      </div>
      {!view.approval.youMay && view.approval.whyNot && <p>{view.approval.whyNot}</p>}
    </article>
  );
}
