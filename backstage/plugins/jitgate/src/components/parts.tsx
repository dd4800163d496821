import React, { useState } from 'react';
import { configApiRef, useApi } from '@backstage/frontend-plugin-api';
import type { AccessRequestView, AuditEvent } from '../api';
import { durationInWords, eventLabel, stateLabel, when } from '../words';

/** The pages' settings from app-config (`jitgate.pages`). */
export function usePagesSettings(): { pollMs: number; accessTemplate: string; databaseTemplate: string } {
  const config = useApi(configApiRef);
  const seconds = config.getOptionalNumber('jitgate.pages.pollSeconds') ?? 15;
  return {
    pollMs: Math.max(seconds, 1) * 1000,
    accessTemplate: config.getOptionalString('jitgate.pages.templates.access') ?? 'template:default/jitgate-request-access',
    databaseTemplate: config.getOptionalString('jitgate.pages.templates.database')
      ?? 'template:default/jitgate-request-database-access',
  };
}

export const styles = {
  card: { border: '1px solid rgba(127,127,127,0.5)', borderRadius: 6, padding: '12px 16px', margin: '12px 0' },
  row: { display: 'flex', gap: 8, flexWrap: 'wrap' as const, alignItems: 'center', margin: '8px 0' },
  table: { borderCollapse: 'collapse' as const, width: '100%' },
  cell: { textAlign: 'left' as const, padding: '4px 8px', borderBottom: '1px solid rgba(127,127,127,0.4)',
          verticalAlign: 'top' as const },
  code: { fontFamily: 'monospace', wordBreak: 'break-all' as const },
};

/** A person as the page can name them: display name when jitgate knows it, else the object id. */
export function personName(principalId: string, displayName?: string): string {
  return displayName ? `${displayName} (${principalId})` : principalId;
}

export function Problem({ error }: { error?: Error }) {
  if (!error) return null;
  return <p role="alert">Could not load from jitgate: {error.message}</p>;
}

/** Runs an action against jitgate and says how it went, in a live region screen readers announce. */
export function useOutcome(after: () => void): {
  message: string;
  busy: boolean;
  act: (label: string, action: () => Promise<{ message: string }>) => Promise<void>;
  region: JSX.Element;
} {
  const [message, setMessage] = useState('');
  const [busy, setBusy] = useState(false);
  const act = async (label: string, action: () => Promise<{ message: string }>) => {
    setBusy(true);
    try {
      const outcome = await action();
      setMessage(`${label}: ${outcome.message}`);
    } catch (error) {
      setMessage(`${label} refused: ${(error as Error).message}`);
    } finally {
      setBusy(false);
      after();
    }
  };
  const region = <p role="status" aria-live="polite">{message}</p>;
  return { message, busy, act, region };
}

export function Target({ view }: { view: AccessRequestView }) {
  const target = view.request?.target;
  if (!target) return <span>an invalid request</span>;
  return (
    <span>
      <strong>{target.role}</strong> on <span style={styles.code}>{target.scope}</span> ({target.provider})
    </span>
  );
}

export function Facts({ view, now }: { view: AccessRequestView; now: number }) {
  const request = view.request;
  return (
    <dl style={{ margin: '4px 0', display: 'grid', gridTemplateColumns: 'max-content 1fr', gap: '2px 12px' }}>
      {request && (
        <>
          <dt>Requester</dt>
          <dd style={{ margin: 0 }}>{personName(request.requester.principalId, request.requester.displayName)}</dd>
          <dt>For</dt>
          <dd style={{ margin: 0 }}>{durationInWords(request.duration)}</dd>
          <dt>Why</dt>
          <dd style={{ margin: 0 }}>{request.justification}{request.ticket ? ` (${request.ticket})` : ''}</dd>
        </>
      )}
      <dt>State</dt>
      <dd style={{ margin: 0 }}>{view.stateInWords || stateLabel(view.state)}</dd>
      <dt>Asked</dt>
      <dd style={{ margin: 0 }}>{when(view.createdAt, now)}</dd>
      {view.decision?.rule && (
        <>
          <dt>Rule</dt>
          <dd style={{ margin: 0 }}>{view.decision.rule}</dd>
        </>
      )}
    </dl>
  );
}

/** More time the requester asked for, while it waits for approval: until when, why, and who approved it so far. */
export function MoreTimeAsked({ view, now }: { view: AccessRequestView; now: number }) {
  const extension = view.extension;
  if (!extension) return null;
  const given = extension.approvals.length;
  return (
    <p style={{ margin: '4px 0' }} data-testid="more-time">
      More time asked: until {when(extension.until, now)}{extension.reason ? ` (“${extension.reason}”)` : ''};
      approvals {given} of {extension.requiredApprovals}
      {extension.approverGroups.length > 0 ? ` from ${extension.approverGroups.join(', ')}` : ''}
      {given > 0 ? `, by ${extension.approvals.map(a => a.approverId).join(', ')}` : ''}
    </p>
  );
}

/** Who approved, how many more are needed, and who still may. */
export function Approvals({ view, now }: { view: AccessRequestView; now: number }) {
  const { approval } = view;
  if (approval.required === 0 && approval.given.length === 0) return null;
  const missing = Math.max(approval.required - approval.given.length, 0);
  return (
    <div>
      <p style={{ margin: '4px 0' }}>
        Approvals: {approval.given.length} of {approval.required}
        {view.state === 'pending_approval' && missing > 0 ? `, ${missing} more needed` : ''}
        {approval.approverGroups.length > 0 ? ` (from ${approval.approverGroups.join(', ')})` : ''}
      </p>
      {approval.given.length > 0 && (
        <ul aria-label="Approved by">
          {approval.given.map(a => (
            <li key={a.approverId}>
              Approved by {a.approverId} {when(a.at, now)}{a.comment ? `: “${a.comment}”` : ''}
            </li>
          ))}
        </ul>
      )}
      {approval.stillMay && approval.stillMay.length > 0 && (
        <p style={{ margin: '4px 0' }}>
          Still may approve: {approval.stillMay.map(p => personName(p.principalId, p.displayName)).join(', ')}
        </p>
      )}
    </div>
  );
}

export function Timeline({ events, now }: { events: AuditEvent[]; now: number }) {
  return (
    <ol aria-label="Timeline">
      {events.map(event => (
        <li key={event.id}>
          {eventLabel(event.type)} — {when(event.at, now)}
          {event.actor.kind !== 'system' ? `, by ${event.actor.principalId}` : ''}
          {typeof event.data.reason === 'string' && event.data.reason ? `: ${event.data.reason}` : ''}
          {typeof event.data.comment === 'string' && event.data.comment ? `: “${event.data.comment}”` : ''}
        </li>
      ))}
    </ol>
  );
}
