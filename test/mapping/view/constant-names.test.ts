// `%name` in an expression is a FHIRPath identifier (letters, digits, _): `%max-1` is the
// constant max minus 1, not a constant called `max-1`.
import { describe, expect, it } from 'vitest';
import { compileView, ViewDefinitionError } from '../../../src/mapping/view/index.js';

describe('constant names in expressions', () => {
  it('when a constant is followed by a minus without spaces, then it is subtraction', () => {
    const view = compileView({
      resource: 'Patient',
      constant: [{ name: 'max', valueInteger: 5 }],
      select: [
        {
          column: [
            { name: 'a', path: '%max-1' },
            { name: 'b', path: '%max-%max' },
            { name: 'c', path: 'name.given.count()-%max' },
          ],
        },
      ],
    });
    expect(view.rows({ resourceType: 'Patient', name: [{ given: ['Ana'] }] })).toEqual([
      { a: 4, b: 0, c: -4 },
    ]);
  });

  it('when an unquoted name has a dash, then the part before it is the unknown constant', () => {
    let error: unknown;
    try {
      compileView({ resource: 'Patient', select: [{ column: [{ name: 'a', path: '%vs-1' }] }] });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ViewDefinitionError);
    expect((error as ViewDefinitionError).issues).toEqual([
      {
        path: 'select[0].column[0].path',
        message: '%vs is not a constant of this view (define it under constant)',
      },
    ]);
  });
});
