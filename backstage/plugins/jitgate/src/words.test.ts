import { durationInWords, roughly, timeLeft, when } from './words';
import { auditCsv, csvCell } from './csv';

const NOW = Date.parse('2026-12-06T09:00:00Z');

test('time left reads as a person says it', () => {
  expect(timeLeft('2026-12-06T10:05:00Z', NOW)).toBe('1 hour 5 minutes left');
  expect(timeLeft('2026-12-06T09:00:40Z', NOW)).toBe('less than a minute left');
  expect(timeLeft('2026-12-06T08:59:00Z', NOW)).toBe('ended');
  expect(timeLeft('2026-12-08T11:00:00Z', NOW)).toBe('2 days 2 hours left');
  expect(roughly(90 * 60_000)).toBe('1 hour 30 minutes');
});

test('instants and durations in words', () => {
  expect(when('2026-12-06T10:00:00Z', NOW)).toBe('2026-12-06 10:00 UTC (in 1 hour)');
  expect(when('2026-12-06T08:55:00Z', NOW)).toBe('2026-12-06 08:55 UTC (5 minutes ago)');
  expect(durationInWords('PT1H30M')).toBe('1 hour 30 minutes');
  expect(durationInWords('P1D')).toBe('1 day');
  expect(durationInWords('soon')).toBe('soon');
});

test('CSV cells are quoted, and a formula cannot run when the export is opened', () => {
  expect(csvCell('plain')).toBe('plain');
  expect(csvCell('a,b')).toBe('"a,b"');
  expect(csvCell('say "hi"')).toBe('"say ""hi"""');
  expect(csvCell('=HYPERLINK("x")')).toBe('"\'=HYPERLINK(""x"")"');
  expect(csvCell('-1')).toBe("'-1");
  const csv = auditCsv([{
    id: 'r:000000', requestId: 'r', seq: 0, type: 'request.received', at: '2026-12-06T09:00:00Z',
    actor: { principalId: 'jane', kind: 'user' }, data: { justification: 'line one\nline two' }, prevHash: '', hash: 'h',
  }]);
  expect(csv.split('\r\n')[0]).toBe('at,requestId,seq,type,actor,actorKind,data,prevHash,hash');
  expect(csv).toContain('"{""justification"":""line one\\nline two""}"');
});
