import { describe, expect, it } from 'vitest';
import { followAbort } from '../../src/util/abort.js';

describe('followAbort', () => {
  it('when the outer signal aborts later, then the inner controller aborts with its reason', () => {
    const outer = new AbortController();
    const inner = new AbortController();
    followAbort(outer.signal, inner);
    expect(inner.signal.aborted).toBe(false);
    const reason = new Error('stop');
    outer.abort(reason);
    expect(inner.signal.reason).toBe(reason);
  });

  it('when the outer signal has already aborted, then the inner controller aborts at once', () => {
    const outer = new AbortController();
    const reason = new Error('stopped earlier');
    outer.abort(reason);
    const inner = new AbortController();
    followAbort(outer.signal, inner);
    expect(inner.signal.aborted).toBe(true);
    expect(inner.signal.reason).toBe(reason);
  });

  it('when following has stopped, then a later outer abort leaves the inner controller alone', () => {
    const outer = new AbortController();
    const inner = new AbortController();
    followAbort(outer.signal, inner)();
    outer.abort(new Error('too late'));
    expect(inner.signal.aborted).toBe(false);
  });

  it('when there is no outer signal, then nothing happens', () => {
    const inner = new AbortController();
    followAbort(undefined, inner)();
    expect(inner.signal.aborted).toBe(false);
  });
});
