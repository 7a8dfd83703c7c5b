// createDampedWarn: repeats of one warning within the interval are dropped and counted; the
// next one after it says how many; another error text is logged at once.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { createDampedWarn } from '../../src/util/damped-warn.js';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n').filter(Boolean))
        lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}

describe('createDampedWarn', () => {
  it('when one error repeats within the interval, then it is logged once, and the first after the interval carries the count', () => {
    const { logger, lines } = capture();
    let now = 0;
    const warn = createDampedWarn(logger, 60_000, () => now);
    for (let i = 0; i < 5; i++) {
      warn('redis connection error', 'connect ECONNREFUSED 127.0.0.1:6379');
      now += 1_000;
    }
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 40, msg: 'redis connection error' });
    now = 61_000;
    warn('redis connection error', 'connect ECONNREFUSED 127.0.0.1:6379');
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatchObject({ msg: 'redis connection error (repeated)', repeats: 4 });
    // Nothing dropped since: the next one after another interval is plain.
    now = 130_000;
    warn('redis connection error', 'connect ECONNREFUSED 127.0.0.1:6379');
    expect(lines[2]).toMatchObject({ msg: 'redis connection error' });
    expect(lines[2]).not.toHaveProperty('repeats');
  });

  it('when the error text or the message differs, then each is logged at once', () => {
    const { logger, lines } = capture();
    const warn = createDampedWarn(logger, 60_000, () => 0);
    warn('redis connection error', 'connect ECONNREFUSED 127.0.0.1:6379');
    warn('redis connection error', 'connect ETIMEDOUT');
    warn('queue error', 'connect ECONNREFUSED 127.0.0.1:6379');
    warn('queue error', 'connect ECONNREFUSED 127.0.0.1:6379');
    expect(lines.map((l) => [l.msg, l.err])).toEqual([
      ['redis connection error', 'connect ECONNREFUSED 127.0.0.1:6379'],
      ['redis connection error', 'connect ETIMEDOUT'],
      ['queue error', 'connect ECONNREFUSED 127.0.0.1:6379'],
    ]);
  });
});
