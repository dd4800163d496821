import React from 'react';
import { Route, Routes, useSearchParams } from 'react-router-dom';
import { ReactRouterV6PageRouter } from '@backstage/frontend-adapter-react-router-v6';
import { MyAccess } from './MyAccess';
import { WaitingForMe } from './WaitingForMe';
import { AuditView } from './AuditView';
import { RequestDetail } from './RequestDetail';

const TABS = [
  { id: 'mine', label: 'My access', Panel: MyAccess },
  { id: 'waiting', label: 'Waiting for me', Panel: WaitingForMe },
  { id: 'audit', label: 'Audit', Panel: AuditView },
] as const;

/** The Access page: My access, Waiting for me, Audit; and one request's page under `requests/<id>`. */
export function AccessPage() {
  return (
    <main style={{ padding: '16px 24px', maxWidth: 1100 }}>
      <h1>Access</h1>
      {/* NB. The adapter gives the page React Router's context in the new frontend system; under the legacy one it
          renders its children untouched. */}
      <ReactRouterV6PageRouter>
        <Routes>
          <Route path="/" element={<Tabs />} />
          <Route path="/requests/:requestId" element={<RequestDetail />} />
        </Routes>
      </ReactRouterV6PageRouter>
    </main>
  );
}

function Tabs() {
  const [params, setParams] = useSearchParams();
  const current = TABS.find(tab => tab.id === params.get('tab')) ?? TABS[0];
  const { Panel } = current;
  const move = (event: React.KeyboardEvent, index: number) => {
    const next = event.key === 'ArrowRight' ? index + 1 : event.key === 'ArrowLeft' ? index - 1 : undefined;
    if (next === undefined) return;
    const tab = TABS[(next + TABS.length) % TABS.length];
    setParams({ tab: tab.id });
    document.getElementById(`jitgate-tab-${tab.id}`)?.focus();
  };
  return (
    <>
      <div role="tablist" aria-label="Access" style={{ display: 'flex', gap: 8, marginBottom: 8 }}>
        {TABS.map((tab, index) => (
          <button key={tab.id} id={`jitgate-tab-${tab.id}`} type="button" role="tab"
                  aria-selected={tab.id === current.id} aria-controls="jitgate-panel"
                  tabIndex={tab.id === current.id ? 0 : -1}
                  style={{ fontWeight: tab.id === current.id ? 'bold' : 'normal',
                           borderBottom: tab.id === current.id ? '3px solid currentColor' : '3px solid transparent' }}
                  onClick={() => setParams({ tab: tab.id })} onKeyDown={e => move(e, index)}>
            {tab.label}
          </button>
        ))}
      </div>
      <div role="tabpanel" id="jitgate-panel" aria-labelledby={`jitgate-tab-${current.id}`}>
        <Panel />
      </div>
    </>
  );
}
