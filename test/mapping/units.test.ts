// Unit conversion through UCUM with the pack's unit synonyms: factors are right, strings EHRs
// send are understood, and anything UCUM cannot convert is reported as such (null).
import { describe, expect, it, vi } from 'vitest';
import { createUnitConverter, roundTo, unitForMessage } from '../../src/mapping/units.js';

const synonyms = { in: '[in_i]', lbs: '[lb_av]', 'kg/m²': 'kg/m2' };

describe('createUnitConverter', () => {
  it('when UCUM codes and synonyms are converted, then the factors are the UCUM definitions', () => {
    const cm = createUnitConverter('cm', synonyms);
    expect(cm.factor('[in_i]')).toBeCloseTo(2.54, 10);
    expect(cm.factor('in')).toBeCloseTo(2.54, 10);
    expect(cm.factor('IN')).toBeCloseTo(2.54, 10);
    expect(cm.factor('m')).toBe(100);
    expect(cm.factor('cm')).toBe(1);
    const kg = createUnitConverter('kg', synonyms);
    expect(kg.factor('[lb_av]')).toBeCloseTo(0.45359237, 10);
    expect(kg.factor(' lbs ')).toBeCloseTo(0.45359237, 10);
    expect(kg.factor('g')).toBeCloseTo(0.001, 12);
    expect(kg.factor('[oz_av]')).toBeCloseTo(0.028349523125, 12);
    expect(createUnitConverter('kg/m2', synonyms).factor('kg/m²')).toBe(1);
  });

  it('when a unit word or code ends in a full stop, as flowsheets abbreviate, then it is read without it', () => {
    const kg = createUnitConverter('kg', synonyms);
    expect(kg.factor('lbs.')).toBeCloseTo(0.45359237, 10);
    expect(kg.factor('g.')).toBeCloseTo(0.001, 12);
    expect(kg.factor('kg.')).toBe(1);
    const cm = createUnitConverter('cm', synonyms);
    expect(cm.factor('in.')).toBeCloseTo(2.54, 10);
    expect(cm.factor('m.')).toBe(100);
    // One full stop only, and never a bare one.
    expect(cm.factor('in..')).toBeNull();
    expect(cm.factor('.')).toBeNull();
  });

  it('when a unit is unknown or of another dimension, then the factor is null', () => {
    const kg = createUnitConverter('kg', synonyms);
    expect(kg.factor('bananas')).toBeNull();
    expect(kg.factor('cm')).toBeNull();
    expect(kg.factor('')).toBeNull();
    expect(kg.factor('%')).toBeNull();
  });

  it('when values are rounded, then halves round away from zero without binary artefacts', () => {
    expect(roundTo(1.405 * 100, 1)).toBe(140.5);
    expect(roundTo(31.75147, 1)).toBe(31.8);
    expect(roundTo(16.25, 1)).toBe(16.3);
    expect(roundTo(140, 1)).toBe(140);
  });
});

describe('unitForMessage', () => {
  it('when a unit is a UCUM unit or a common unit word, then a finding may quote it', () => {
    for (const u of [
      'mg',
      '[lb_av]',
      'lbs',
      'Inches',
      'kg/m2',
      'mo',
      'days',
      '[in_i]',
      'gm',
      'gms',
      'lbs.',
      'Pounds.',
    ])
      expect(unitForMessage(u)).toBe(`"${u}"`);
  });

  it('when a unit is free text, a name or code-like text, a number or too long, then only its length is said', () => {
    for (const u of [
      'kg per mother',
      'Smith',
      'J.Smith',
      'MRN-A12B34',
      'bananas',
      '12345678',
      '555-0100',
      'x'.repeat(17),
      '',
      'kg\n',
      '{JaneRoe}',
      'kg{Smith}',
    ])
      expect(unitForMessage(u)).toBe(`(free text of ${u.length} characters, not a unit code)`);
  });

  it('when UCUM cannot parse a free-text unit, then the text is not logged', () => {
    const spy = vi.spyOn(console, 'log');
    try {
      expect(createUnitConverter('kg', {}).factor('kg per mother Ann Example')).toBeNull();
      expect(spy).not.toHaveBeenCalled();
    } finally {
      spy.mockRestore();
    }
  });
});
