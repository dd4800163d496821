import type { AuditEvent } from './api';

export const CSV_COLUMNS = ['at', 'requestId', 'seq', 'type', 'actor', 'actorKind', 'data', 'prevHash', 'hash'];

/**
 * One cell: quoted when it holds a comma, quote or line break; and a cell a spreadsheet would run as a formula
 * (=, +, -, @, tab, carriage return first) is prefixed with ' so that opening an export cannot run what a request's
 * justification smuggled in.
 */
export function csvCell(value: unknown): string {
  let text = value === null || value === undefined ? '' : String(value);
  if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** Audit events as CSV (RFC 4180, CRLF line ends), one row per event, its data as JSON. */
export function auditCsv(events: AuditEvent[]): string {
  const rows = events.map(e => [e.at, e.requestId, e.seq, e.type, e.actor.principalId, e.actor.kind,
    JSON.stringify(e.data), e.prevHash, e.hash].map(csvCell).join(','));
  return [CSV_COLUMNS.join(','), ...rows].join('\r\n') + '\r\n';
}
