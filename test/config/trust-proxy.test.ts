// api.trustProxy: true would trust every X-Forwarded-For entry, letting any client choose its
// address and dodge the failed-key limit (security review finding 8): it is refused with a
// message that says what to set instead.
import { describe, expect, it } from 'vitest';
import { loadServiceConfig, parseServiceConfig } from '../../src/config/service.js';
import { SECRET } from '../sync/helpers.js';

function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
  throw new Error('expected a config error');
}

describe('api.trustProxy', () => {
  it('when LHN_TRUST_PROXY=true, then the config is refused naming the variable and suggesting a hop count or address', () => {
    const message = errorOf(() =>
      loadServiceConfig({ LHN_PSEUDONYM_SECRET: SECRET, LHN_TRUST_PROXY: 'true' }),
    );
    expect(message).toMatch(/api\.trustProxy: true is not accepted/);
    expect(message).toMatch(/number of proxy hops/);
    expect(message).toMatch(/CIDR/);
    expect(message).toMatch(/set by LHN_TRUST_PROXY/);
  });

  it('when a config gives trustProxy: true (or the string "true"), then it is refused', () => {
    for (const trustProxy of [true, 'true', 'TRUE']) {
      expect(
        errorOf(() => parseServiceConfig({ pseudonymSecret: SECRET, api: { trustProxy } })),
      ).toMatch(/api\.trustProxy: true is not accepted/);
    }
  });

  it('when a hop count, an address, a CIDR, loopback or false is set, then it is accepted', () => {
    for (const value of ['1', '2', '10.0.0.5', '10.0.0.0/8', 'loopback', 'false']) {
      const config = loadServiceConfig({ LHN_PSEUDONYM_SECRET: SECRET, LHN_TRUST_PROXY: value });
      expect(config.api.trustProxy).toBe(
        /^\d+$/.test(value) ? Number(value) : value === 'false' ? false : value,
      );
    }
  });
});
