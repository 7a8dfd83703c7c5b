// api.trustProxy: true would trust every X-Forwarded-For entry, letting any client choose its
// address and dodge the failed-key limit (security review finding 8): it is refused with a
// message that says what to set instead.
import express from 'express';
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

  it.each(['loopbak', 'yes', '10.0.0.0/33', '10.0.0.5, lopback', '10.0.0.0/255.0.255.0'])(
    'when LHN_TRUST_PROXY=%j is no address, then the config is refused naming the variable (serve used to print an unnamed error and hang)',
    (value) => {
      const message = errorOf(() =>
        loadServiceConfig({ LHN_PSEUDONYM_SECRET: SECRET, LHN_TRUST_PROXY: value }),
      );
      expect(message).toMatch(/api\.trustProxy: .* not a proxy address/);
      expect(message).toMatch(/set by LHN_TRUST_PROXY/);
    },
  );

  it('when an address list is checked, then the config accepts exactly what Express accepts', () => {
    const values = [
      'loopback',
      'linklocal,uniquelocal',
      'loopback, 10.0.0.5',
      '10.0.0.0/8',
      '10.0.0.0/0',
      '10.0.0.0/0.0.0.0',
      '10.0.0.0/008',
      '10.0.0.0/32',
      '10.0.0.0/33',
      '10.0.0.0/255.0.0.0',
      '10.0.0.0/255.255.255.255',
      '10.0.0.0/255.0.255.0',
      '::1',
      'fe80::/10',
      '::1/128',
      '::1/129',
      '::ffff:10.0.0.1',
      '10.0.0',
      '300.0.0.1',
      'localhost',
      'loopbak',
      '1.2.3.4/abc',
    ];
    for (const value of values) {
      let expressAccepts = true;
      try {
        express().set('trust proxy', value);
      } catch {
        expressAccepts = false;
      }
      let configAccepts = true;
      try {
        parseServiceConfig({ pseudonymSecret: SECRET, api: { trustProxy: value } });
      } catch {
        configAccepts = false;
      }
      expect({ value, accepted: configAccepts }).toEqual({ value, accepted: expressAccepts });
    }
  });
});
