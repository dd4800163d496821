import React from 'react';
import { useApi } from '@backstage/frontend-plugin-api';
import { useRouteRef } from '@backstage/core-plugin-api';
import { useEntity } from '@backstage/plugin-catalog-react';
import { jitgateApiRef, type AccessRequestView } from '../api';
import { rootRouteRef } from '../routes';
import { targetsOf, templateLink } from '../targets';
import { stateLabel, timeLeft } from '../words';
import { Problem, personName, styles, usePagesSettings } from './parts';
import { useNow, usePolled } from './hooks';

/** Where the Access page is mounted; `/jitgate` when this app has not mounted it (the tab works without the page). */
function useAccessPagePath(): string {
  try {
    // eslint-disable-next-line react-hooks/rules-of-hooks
    return useRouteRef(rootRouteRef)();
  } catch {
    return '/jitgate';
  }
}

/** The entity tab: who holds access to this entity's scopes now, who waits for it, and a button to ask. */
export function EntityAccessContent() {
  const { entity } = useEntity();
  const api = useApi(jitgateApiRef);
  const { pollMs, accessTemplate, databaseTemplate } = usePagesSettings();
  const base = useAccessPagePath();
  const now = useNow();
  const targets = targetsOf(entity);
  const key = `${targets.provider}|${targets.scopes.join('|')}`;
  const holders = usePolled(async () => {
    const pages = await Promise.all(targets.scopes.map(scope => api.list({
      provider: targets.provider, scope, state: ['active', 'pending_approval', 'approved'], limit: 100,
    })));
    return pages.flatMap(page => page.requests);
  }, pollMs, [api, key]);
  const rows: AccessRequestView[] = holders.value ?? [];
  return (
    <section aria-labelledby="jitgate-entity" style={{ padding: 16 }}>
      <h2 id="jitgate-entity">Who has access</h2>
      <div style={styles.row}>
        <a href={templateLink(targets.database ? databaseTemplate : accessTemplate, targets)}>Request access</a>
        <span>Roles offered: {targets.roles.join(', ')} ({targets.provider})</span>
      </div>
      <Problem error={holders.error} />
      {holders.value && rows.length === 0 && <p>Nobody holds or waits for access here that you may see.</p>}
      {rows.length > 0 && (
        <table style={styles.table}>
          <caption style={{ textAlign: 'left' }}>
            Access now and waiting, as far as you may see it (your own, those you approve; auditors see all)
          </caption>
          <thead>
            <tr>
              {['Who', 'Role', 'Scope', 'State', 'Time left', 'Request'].map(h => (
                <th key={h} scope="col" style={styles.cell}>{h}</th>
              ))}
            </tr>
          </thead>
          <tbody>
            {rows.map(view => (
              <tr key={view.requestId}>
                <td style={styles.cell}>
                  {view.request ? personName(view.request.requester.principalId, view.request.requester.displayName) : ''}
                </td>
                <td style={styles.cell}>{view.request?.target.role}</td>
                <td style={{ ...styles.cell, ...styles.code }}>{view.request?.target.scope}</td>
                <td style={styles.cell}>{stateLabel(view.state)}</td>
                <td style={styles.cell}>{view.state === 'active' ? timeLeft(view.expiresAt, now) : ''}</td>
                <td style={styles.cell}><a href={`${base}/requests/${view.requestId}`}>Details</a></td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
