// A view on an abstract resource type (Resource, DomainResource) can never give a row, since
// no resource has that resourceType; it is a compile error instead of a silent empty table.
import { describe, expect, it } from 'vitest';
import { compileView, ViewDefinitionError } from '../../../src/mapping/view/index.js';

describe('view resource type', () => {
  it.each(['Resource', 'DomainResource'])(
    'when resource is %s, then compileView says it is abstract',
    (resource) => {
      let error: unknown;
      try {
        compileView({ resource, select: [{ column: [{ name: 'a', path: 'id' }] }] });
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(ViewDefinitionError);
      const issues = (error as ViewDefinitionError).issues;
      expect(issues).toHaveLength(1);
      expect(issues[0]?.path).toBe('resource');
      expect(issues[0]?.message).toContain(`'${resource}' is an abstract type`);
    },
  );

  it('when resource is a concrete type, then it still compiles', () => {
    const view = compileView({
      resource: 'Basic',
      select: [{ column: [{ name: 'a', path: 'id' }] }],
    });
    expect(view.rows({ resourceType: 'Basic', id: 'b1' })).toEqual([{ a: 'b1' }]);
  });
});
