/**
 * ISO 8601 durations: the subset with a fixed length (weeks, days, hours, minutes, seconds),
 * read exactly as `shared/domain/durations.py` reads them. Years and months are refused because
 * they have no fixed length.
 *
 * NB. JavaScript's `\d` and `$` are ASCII-only and end-of-text-only, where Python's also accept
 * other scripts' digits and a trailing newline: on those exotic inputs we are stricter than the
 * Python model, never looser.
 */
const ISO_DURATION =
  /^P(?:(\d{1,4})W)?(?:(\d{1,4})D)?(?:T(?:(\d{1,5})H)?(?:(\d{1,6})M)?(?:(\d{1,7})(?:\.(\d{1,6}))?S)?)?$/;

export const MICROSECONDS_PER_DAY = 86_400_000_000;

/**
 * The length of `text` in whole microseconds (the resolution of Python's timedelta), or
 * undefined when `text` is not such a duration. The largest accepted value (9999W9999D...) is
 * below 2^53 µs, so the arithmetic is exact.
 */
export function durationMicroseconds(text: string): number | undefined {
  const match = ISO_DURATION.exec(text);
  if (!match || text === 'P' || text === 'PT' || text.endsWith('T')) {
    return undefined;
  }
  const [, weeks, days, hours, minutes, seconds, fraction] = match.map(part => part ?? '');
  const wholeSeconds =
    (Number(weeks) * 7 + Number(days)) * 86_400 +
    Number(hours) * 3_600 +
    Number(minutes) * 60 +
    Number(seconds);
  return wholeSeconds * 1_000_000 + Number((fraction ?? '').padEnd(6, '0'));
}
