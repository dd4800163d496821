/**
 * Times, durations and states in the words a person reads at a glance (as jitgate's own `shared/text.py`): "1 hour
 * 5 minutes left", "2026-12-06 09:17 UTC", "waiting for approval". The API's fields stay ISO 8601.
 */

const UNITS: Array<[string, number]> = [
  ['day', 86_400],
  ['hour', 3_600],
  ['minute', 60],
];

/** A length of time to the minute in its two largest units: `1 hour 30 minutes`; `less than a minute` below one. */
export function roughly(milliseconds: number): string {
  let minutes = Math.round(Math.abs(milliseconds) / 60_000);
  if (minutes === 0) return 'less than a minute';
  const words: string[] = [];
  for (const [unit, seconds] of UNITS) {
    const size = seconds / 60;
    const count = Math.floor(minutes / size);
    if (count > 0) {
      words.push(`${count} ${unit}${count === 1 ? '' : 's'}`);
      minutes -= count * size;
    }
  }
  return words.slice(0, 2).join(' ');
}

/** How long an active grant has left: `1 hour 5 minutes left`, `less than a minute left`, `ended`. */
export function timeLeft(expiresAt: string | null, now: number): string {
  if (!expiresAt) return '';
  const left = Date.parse(expiresAt) - now;
  if (left <= 0) return 'ended';
  if (left < 60_000) return 'less than a minute left';
  return `${roughly(left)} left`;
}

/** `2026-12-06 09:17 UTC (in 1 hour)`, `… (5 minutes ago)`. */
export function when(at: string | null, now: number): string {
  if (!at) return '';
  const instant = Date.parse(at);
  const text = `${new Date(instant).toISOString().slice(0, 16).replace('T', ' ')} UTC`;
  const delta = instant - now;
  const distance = roughly(delta);
  if (distance === 'less than a minute') return `${text} (just now)`;
  return delta > 0 ? `${text} (in ${distance})` : `${text} (${distance} ago)`;
}

const DURATION = /^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$/;

/** An ISO 8601 duration (`PT1H30M`) in words (`1 hour 30 minutes`); the text itself when it is not one. */
export function durationInWords(iso: string): string {
  const match = DURATION.exec(iso);
  if (!match) return iso;
  const [, days, hours, minutes, seconds] = match.map(part => Number(part ?? 0));
  const total = ((days * 24 + hours) * 60 + minutes) * 60_000 + seconds * 1000;
  return roughly(total);
}

const STATES: Record<string, string> = {
  received: 'received',
  pending_approval: 'waiting for approval',
  approved: 'approved, being granted',
  active: 'active',
  revoked: 'ended',
  rejected: 'rejected',
  denied: 'denied',
  expired: 'expired without a decision',
  failed: 'failed',
};

export function stateLabel(state: string): string {
  return STATES[state] ?? state;
}

/** Audit event types in words, for the timelines. */
const EVENTS: Record<string, string> = {
  'request.received': 'Request received',
  'request.rejected': 'Rejected as invalid',
  'policy.evaluated': 'Policy decided',
  'approval.requested': 'Approval asked for',
  'approval.recorded': 'Approver answered',
  'request.approved': 'Approved',
  'request.denied': 'Denied',
  'request.expired': 'Expired without a decision',
  'grant.applied': 'Access granted',
  'grant.failed': 'Grant failed',
  'grant.extended': 'Extended',
  'revoke.scheduled': 'End scheduled',
  'grant.revoked': 'Access ended',
  'grant.revoke_failed': 'Revoke failed, retrying',
  'reconcile.orphan_removed': 'Stray access removed',
  'activity.summary': 'Activity summary',
  'access.refused': 'Refused a caller',
};

export function eventLabel(type: string): string {
  return EVENTS[type] ?? type;
}
