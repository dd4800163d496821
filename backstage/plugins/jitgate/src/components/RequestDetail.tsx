import React, { useState } from 'react';
import { Link, useParams } from 'react-router-dom';
import { useApi } from '@backstage/frontend-plugin-api';
import { jitgateApiRef } from '../api';
import { timeLeft, when } from '../words';
import { Approvals, Facts, MoreTimeAsked, Problem, Target, Timeline, styles, useOutcome, usePagesSettings } from './parts';
import { useNow, usePolled } from './hooks';
import { EXTENSIONS } from './MyAccess';

/** One request's page (`/jitgate/requests/<id>`, where Teams cards link): its state, approvals, timeline and what
 * the viewer may do with it now. */
export function RequestDetail() {
  const { requestId = '' } = useParams();
  const api = useApi(jitgateApiRef);
  const { pollMs } = usePagesSettings();
  const now = useNow();
  const request = usePolled(() => api.get(requestId), pollMs, [api, requestId]);
  const outcome = useOutcome(request.reload);
  const [comment, setComment] = useState('');
  const [extension, setExtension] = useState('PT1H');
  const view = request.value;
  return (
    <section aria-labelledby="jitgate-request">
      <p><Link to="../..">Back to access</Link></p>
      <h2 id="jitgate-request">Request <span style={styles.code}>{requestId}</span></h2>
      <Problem error={request.error} />
      {outcome.region}
      {view && (
        <div style={styles.card}>
          <p style={{ margin: '4px 0' }}><Target view={view} /></p>
          {view.state === 'active' && (
            <p style={{ fontSize: '1.2em' }} data-testid="time-left">
              {timeLeft(view.expiresAt, now)} (until {when(view.expiresAt, now)})
            </p>
          )}
          <Facts view={view} now={now} />
          <MoreTimeAsked view={view} now={now} />
          <Approvals view={view} now={now} />
          {view.approval.youMay && (
            <div style={styles.row}>
              <label htmlFor="detail-comment">Comment (required to deny)</label>
              <input id="detail-comment" type="text" maxLength={500} size={40} value={comment}
                     onChange={e => setComment(e.target.value)} />
              <button type="button" disabled={outcome.busy}
                      onClick={() => outcome.act('Approve', () => api.approve(requestId, comment.trim()))}>
                Approve
              </button>
              <button type="button" disabled={outcome.busy || !comment.trim()}
                      onClick={() => outcome.act('Deny', () => api.deny(requestId, comment.trim()))}>
                Deny
              </button>
            </div>
          )}
          {view.state === 'active' && (
            <div style={styles.row}>
              <button type="button" disabled={outcome.busy}
                      onClick={() => outcome.act("I'm done", () => api.revoke(requestId, 'done'))}>
                I'm done
              </button>
              <label htmlFor="detail-extend">More time</label>
              <select id="detail-extend" value={extension} onChange={e => setExtension(e.target.value)}>
                {EXTENSIONS.map(([value, label]) => <option key={value} value={value}>{label}</option>)}
              </select>
              <button type="button" disabled={outcome.busy}
                      onClick={() => outcome.act('Extend', () => api.extend(requestId, extension, ''))}>
                Extend
              </button>
            </div>
          )}
          <h3>Timeline</h3>
          {view.timeline && <Timeline events={view.timeline} now={now} />}
        </div>
      )}
    </section>
  );
}
