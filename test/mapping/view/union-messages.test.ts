// unionAll branches whose column differs in its collection flag: the message reads right
// either way round.
import { describe, expect, it } from 'vitest';
import { compileView, ViewDefinitionError } from '../../../src/mapping/view/index.js';

function unionIssue(first: boolean, second: boolean): string | undefined {
  try {
    compileView({
      resource: 'Patient',
      select: [
        {
          unionAll: [
            { column: [{ name: 'a', path: 'name.family', collection: first }] },
            { column: [{ name: 'a', path: 'name.family', collection: second }] },
          ],
        },
      ],
    });
  } catch (error) {
    if (error instanceof ViewDefinitionError) return error.issues[0]?.message;
    throw error;
  }
  return undefined;
}

describe('unionAll collection mismatch', () => {
  it('when the first branch is a collection and the second not, then it says so', () => {
    expect(unionIssue(true, false)).toBe(
      "column 'a' is not a collection here but is in unionAll[0]",
    );
  });

  it('when the second branch is a collection and the first not, then it says so', () => {
    expect(unionIssue(false, true)).toBe("column 'a' is a collection here but not in unionAll[0]");
  });
});
