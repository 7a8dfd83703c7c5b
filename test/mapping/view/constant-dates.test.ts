// Date, dateTime, instant and time constants that have the right shape but are not real
// dates or times (month 13, 30 February, hour 25) are compile errors naming the constant,
// instead of a view that fails on every resource.
import { describe, expect, it } from 'vitest';
import { compileView, ViewDefinitionError } from '../../../src/mapping/view/index.js';

function viewWith(constant: Record<string, unknown>) {
  return {
    resource: 'Patient',
    constant: [constant],
    select: [{ column: [{ name: 'a', path: `birthDate = %${String(constant.name)}` }] }],
  };
}

function compileError(definition: unknown): ViewDefinitionError {
  try {
    compileView(definition, { source: 'views/v.json' });
  } catch (error) {
    if (error instanceof ViewDefinitionError) return error;
    throw error;
  }
  throw new Error('expected compileView to throw');
}

describe('date and time constants', () => {
  it.each([
    [{ name: 'd', valueDate: '2020-13-45' }, 'valueDate', 'month 13 does not exist'],
    [{ name: 'd', valueDate: '2021-02-29' }, 'valueDate', 'day 29 does not exist in 2021-02'],
    [{ name: 'd', valueDate: '2020-00' }, 'valueDate', 'month 0 does not exist'],
    [
      { name: 'cutoff', valueDateTime: '2020-02-30T25:61:00Z' },
      'valueDateTime',
      'day 30 does not exist in 2020-02',
    ],
    [{ name: 'dt', valueDateTime: '2020-02-28T24:00:00Z' }, 'valueDateTime', 'hour 24'],
    [{ name: 'dt', valueDateTime: '2020-02-28T10:60:00Z' }, 'valueDateTime', 'minute 60'],
    [{ name: 'dt', valueDateTime: '2020-02-28T10:00:00+15:00' }, 'valueDateTime', '±14:00'],
    [{ name: 'i', valueInstant: '2020-04-31T10:00:00Z' }, 'valueInstant', 'day 31'],
    [{ name: 't', valueTime: '25:99:00' }, 'valueTime', 'hour 25 does not exist'],
    [{ name: 't', valueTime: '10:99' }, 'valueTime', 'minute 99 does not exist'],
  ])(
    'when the constant is %o, then compileView names it and the problem',
    (constant, key, problem) => {
      const error = compileError(viewWith(constant));
      expect(error.issues).toHaveLength(1);
      expect(error.issues[0]?.path).toBe(`constant[0].${key}`);
      expect(error.issues[0]?.message).toContain(`constant '${String(constant.name)}'`);
      expect(error.issues[0]?.message).toContain(problem);
    },
  );

  it.each([
    { name: 'd', valueDate: '2020-02-29' },
    { name: 'd', valueDate: '2020-12' },
    { name: 'd', valueDate: '2020' },
    { name: 'd', valueDateTime: '2020-02-29T23:59:60+14:00' },
    { name: 'd', valueDateTime: '2020-02-28T10' },
    { name: 'd', valueInstant: '2020-12-31T23:59:59.999-12:00' },
    { name: 'd', valueTime: '23:59:59' },
    { name: 'd', valueTime: '00' },
  ])('when the constant is %o, then the view compiles and runs', (constant) => {
    const view = compileView(viewWith(constant));
    expect(() => view.rows({ resourceType: 'Patient', birthDate: '2020-02-29' })).not.toThrow();
  });
});
