import React, { useState } from 'react';
import { useApi } from '@backstage/frontend-plugin-api';
import { jitgateApiRef, type AuditEvent, type AuditFilter, type Verification } from '../api';
import { auditCsv } from '../csv';
import { eventLabel, when } from '../words';
import { Problem, styles } from './parts';
import { useNow } from './hooks';

const TYPES = ['request.received', 'request.rejected', 'policy.evaluated', 'approval.requested', 'approval.recorded',
  'request.approved', 'request.denied', 'request.expired', 'grant.applied', 'grant.failed', 'grant.extended',
  'revoke.scheduled', 'grant.revoked', 'grant.revoke_failed', 'reconcile.orphan_removed', 'activity.summary',
  'access.refused'];

/** A `datetime-local` value (read as UTC) as ISO 8601, or undefined when empty. */
function utc(value: string): string | undefined {
  if (!value) return undefined;
  return value.length === 16 ? `${value}:00Z` : `${value}Z`;
}

/** Audit, for auditors and admins: events by request, person, type and time; chain verification; CSV export. */
export function AuditView() {
  const api = useApi(jitgateApiRef);
  const now = useNow(30_000);
  const [form, setForm] = useState({ requestId: '', principalId: '', type: '', since: '', until: '' });
  const [events, setEvents] = useState<AuditEvent[] | undefined>();
  const [continuation, setContinuation] = useState<string | null>(null);
  const [error, setError] = useState<Error | undefined>();
  const [verification, setVerification] = useState<Verification | undefined>();
  const [verifying, setVerifying] = useState(false);

  const filter = (): AuditFilter => ({
    requestId: form.requestId.trim() || undefined,
    principalId: form.principalId.trim() || undefined,
    type: form.type || undefined,
    since: utc(form.since),
    until: utc(form.until),
    limit: 200,
  });
  const search = async (event?: React.FormEvent) => {
    event?.preventDefault();
    setError(undefined);
    try {
      const page = await api.auditEvents(filter());
      setEvents(page.events);
      setContinuation(page.continuation);
    } catch (e) {
      setError(e as Error);
    }
  };
  const loadMore = async () => {
    if (!continuation) return;
    try {
      const page = await api.auditEvents({ ...filter(), continuation });
      setEvents(previous => [...(previous ?? []), ...page.events]);
      setContinuation(page.continuation);
    } catch (e) {
      setError(e as Error);
    }
  };
  const verify = async () => {
    setVerifying(true);
    setError(undefined);
    try {
      setVerification(await api.verify(form.requestId.trim() || undefined));
    } catch (e) {
      setError(e as Error);
    } finally {
      setVerifying(false);
    }
  };
  const field = (name: keyof typeof form) => ({
    id: `audit-${name}`,
    value: form[name],
    onChange: (e: React.ChangeEvent<HTMLInputElement | HTMLSelectElement>) => setForm({ ...form, [name]: e.target.value }),
  });
  return (
    <section aria-labelledby="jitgate-audit">
      <h2 id="jitgate-audit">Audit trail</h2>
      <form onSubmit={search} aria-label="Audit filters">
        <div style={styles.row}>
          <label htmlFor="audit-requestId">Request id</label>
          <input type="text" size={38} {...field('requestId')} />
          <label htmlFor="audit-principalId">Person (object id)</label>
          <input type="text" size={38} {...field('principalId')} />
        </div>
        <div style={styles.row}>
          <label htmlFor="audit-type">Event</label>
          <select {...field('type')}>
            <option value="">any</option>
            {TYPES.map(type => <option key={type} value={type}>{eventLabel(type)} ({type})</option>)}
          </select>
          <label htmlFor="audit-since">From (UTC)</label>
          <input type="datetime-local" {...field('since')} />
          <label htmlFor="audit-until">Until (UTC)</label>
          <input type="datetime-local" {...field('until')} />
        </div>
        <div style={styles.row}>
          <button type="submit">Search</button>
          <button type="button" onClick={verify} disabled={verifying}>
            {form.requestId.trim() ? 'Verify this chain' : 'Verify every chain'}
          </button>
          {events && events.length > 0 && (
            <a href={`data:text/csv;charset=utf-8,${encodeURIComponent(auditCsv(events))}`}
               download="jitgate-audit.csv">Export {events.length} events as CSV</a>
          )}
        </div>
      </form>
      <Problem error={error} />
      <div role="status" aria-live="polite">
        {verification && <VerificationResult verification={verification} />}
      </div>
      {events && events.length === 0 && <p>No events match.</p>}
      {events && events.length > 0 && (
        <table style={styles.table}>
          <caption style={{ textAlign: 'left' }}>{events.length} events{continuation ? ' (more to load)' : ''}</caption>
          <thead>
            <tr>
              {['When', 'Request', 'Event', 'By', 'Details'].map(h => <th key={h} scope="col" style={styles.cell}>{h}</th>)}
            </tr>
          </thead>
          <tbody>
            {events.map(e => (
              <tr key={e.id}>
                <td style={styles.cell}>{when(e.at, now)}</td>
                <td style={{ ...styles.cell, ...styles.code }}>{e.requestId}#{e.seq}</td>
                <td style={styles.cell}>{eventLabel(e.type)}</td>
                <td style={{ ...styles.cell, ...styles.code }}>{e.actor.principalId} ({e.actor.kind})</td>
                <td style={{ ...styles.cell, ...styles.code }}>{JSON.stringify(e.data)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {continuation && <button type="button" onClick={loadMore}>Load more</button>}
    </section>
  );
}

function VerificationResult({ verification }: { verification: Verification }) {
  if (verification.ok) {
    return (
      <p>
        Verified: {verification.chains} chain{verification.chains === 1 ? '' : 's'} ({verification.events} events), none
        broken{verification.unanchored ? `; ${verification.unanchored} without a request record to anchor their end` : ''}.
      </p>
    );
  }
  return (
    <div>
      <p>{verification.broken.length} of {verification.chains} chains are broken:</p>
      <ul>
        {verification.broken.map(b => (
          <li key={b.requestId}>{b.requestId}: {b.reason}{b.brokenEventId ? ` (first broken event ${b.brokenEventId})` : ''}</li>
        ))}
      </ul>
    </div>
  );
}
