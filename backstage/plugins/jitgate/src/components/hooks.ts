import { useCallback, useEffect, useRef, useState } from 'react';

/** The current time, moving every `everyMs` so that "time left" counts down without a reload. */
export function useNow(everyMs = 1000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), everyMs);
    return () => clearInterval(timer);
  }, [everyMs]);
  return now;
}

export interface Polled<T> {
  value?: T;
  error?: Error;
  loading: boolean;
  reload: () => void;
}

/** `load()` now and every `everyMs` after, and again on `reload()`; the last answer stays shown while the next loads. */
export function usePolled<T>(load: () => Promise<T>, everyMs: number, deps: unknown[]): Polled<T> {
  const [state, setState] = useState<{ value?: T; error?: Error; loading: boolean }>({ loading: true });
  const generation = useRef(0);
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const run = useCallback(load, deps);
  const reload = useCallback(() => {
    const mine = ++generation.current;
    setState(previous => ({ ...previous, loading: true }));
    run().then(
      value => mine === generation.current && setState({ value, loading: false }),
      error => mine === generation.current && setState(previous => ({ ...previous, error, loading: false })),
    );
  }, [run]);
  useEffect(() => {
    reload();
    if (everyMs <= 0) return undefined;
    const timer = setInterval(reload, everyMs);
    return () => {
      clearInterval(timer);
      generation.current++;
    };
  }, [reload, everyMs]);
  return { ...state, reload };
}
