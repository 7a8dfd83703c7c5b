// Centre link overrides layer key by key on the pack's link rules.
import { describe, expect, it } from 'vitest';
import { applyCentreOverrides, parseCentreOverrides } from '../../src/mapping/overrides.js';
import { loadIbdPack } from './support/pack.js';

describe('centre link overrides', () => {
  it('when a centre sets only encounterReference false for weight, then the pack keeps its 7-day window and same-day link', async () => {
    const pack = await loadIbdPack();
    const overrides = parseCentreOverrides(
      { links: { weight: { encounterReference: false } } },
      'centres/east.yaml',
    );
    expect(overrides.links.weight).toEqual({ encounterReference: false });
    expect(applyCentreOverrides(pack, overrides).assembly.fields.weight.link).toEqual({
      encounterReference: false,
      sameDay: true,
      windowDays: 7,
    });
  });
});
