// A FHIRPath function called with the wrong number of arguments is a compile-time error naming
// the place in the view, not a console warning and null (or an error) on every resource.
import { describe, expect, it } from 'vitest';
import { compileView, ViewDefinitionError } from '../../../src/mapping/view/index.js';

function compileError(definition: unknown): ViewDefinitionError {
  try {
    compileView(definition, { source: 'views/v.json' });
  } catch (error) {
    if (error instanceof ViewDefinitionError) return error;
    throw error;
  }
  throw new Error('expected compileView to throw');
}

describe('function argument counts', () => {
  it.each([
    ['name.where()', 'where() takes 1 argument, not 0'],
    ['name.first(1)', 'first() takes no arguments, not 1'],
    ["name.family.replace('a')", 'replace() takes 2 arguments, not 1'],
    ['iif(true)', 'iif() takes 2 to 3 arguments, not 1'],
    ['name.exists(given, family)', 'exists() takes 0 to 1 arguments, not 2'],
    ['name.count(1)', 'count() takes no arguments, not 1'],
    ['getResourceKey(1)', 'getResourceKey() takes no arguments, not 1'],
    [
      'link.other.getReferenceKey(Patient, Group)',
      'getReferenceKey() takes 0 to 1 arguments, not 2',
    ],
    ['coalesce()', 'coalesce() takes at least 1 argument, not 0'],
  ])('when a column path is %s, then compileView reports "%s" at the column', (path, message) => {
    const error = compileError({
      resource: 'Patient',
      select: [{ column: [{ name: 'a', path }] }],
    });
    expect(error.issues).toEqual([{ path: 'select[0].column[0].path', message }]);
  });

  it('when the call is inside a forEach, then the error names the nested column', () => {
    const error = compileError({
      resource: 'Patient',
      select: [{ forEach: 'name', column: [{ name: 'a', path: 'family.substring()' }] }],
    });
    expect(error.issues).toEqual([
      { path: 'select[0].column[0].path', message: 'substring() takes 1 to 2 arguments, not 0' },
    ]);
    expect(error.message).toContain('views/v.json');
  });

  it('when the counts are right, then the view compiles', () => {
    const view = compileView({
      resource: 'Patient',
      select: [
        {
          column: [
            { name: 'a', path: "name.where(use = 'official').family.substring(0, 2)" },
            { name: 'b', path: "iif(active, 'y')" },
            { name: 'c', path: "name.given.join(', ')" },
            { name: 'd', path: 'name.given.join()' },
            { name: 'e', path: 'link.other.getReferenceKey(Patient)' },
          ],
        },
      ],
    });
    const rows = view.rows({
      resourceType: 'Patient',
      active: true,
      name: [{ use: 'official', family: 'Rivera', given: ['Ana', 'Maria'] }],
      link: [{ other: { reference: 'Patient/p2' }, type: 'seealso' }],
    });
    expect(rows).toEqual([{ a: 'Ri', b: 'y', c: 'Ana, Maria', d: 'AnaMaria', e: 'p2' }]);
  });
});
