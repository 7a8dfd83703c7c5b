import { describe, expect, it } from 'vitest';
import { isRedisConnectionAbort } from '../../src/sync/run-sync.js';

describe('isRedisConnectionAbort', () => {
  it('when ioredis aborts a command cut off by a closed connection, then it is recognised', () => {
    const err = Object.assign(new Error('Command aborted due to connection close'), {
      name: 'AbortError',
    });
    expect(isRedisConnectionAbort(err)).toBe(true);
  });

  it('when a fetch or signal aborts, or another error says "aborted", then it is not', () => {
    expect(
      isRedisConnectionAbort(new DOMException('This operation was aborted', 'AbortError')),
    ).toBe(false);
    expect(isRedisConnectionAbort(new Error('Command aborted due to connection close'))).toBe(
      false,
    );
    expect(isRedisConnectionAbort('Command aborted due to connection close')).toBe(false);
  });
});
