// The assembler's id filter: never forgets an id (through growth), rarely claims a new one.
import { describe, expect, it } from 'vitest';
import { SeenFilter } from '../../src/mapping/seen-filter.js';

describe('seen filter', () => {
  it('when ids are added past many growths, then every one is known again and few new ids are taken for seen ones', () => {
    const added: [number, string][] = [];
    const filter = new SeenFilter((add) => {
      for (const [tag, key] of added) add(tag, key);
    });
    let falsePositives = 0;
    for (let i = 0; i < 20_000; i++) {
      const entry: [number, string] = [i % 4, `obs-${i}`];
      if (filter.testAndAdd(...entry)) falsePositives++;
      added.push(entry);
    }
    for (const [tag, key] of added) expect(filter.testAndAdd(tag, key)).toBe(true);
    // The same key under another tag is another id.
    let otherTag = 0;
    for (let i = 0; i < 20_000; i += 4) if (filter.testAndAdd(1, `obs-${i}`)) otherTag++;
    expect(falsePositives).toBeLessThan(200);
    expect(otherTag).toBeLessThan(100);
  });
});
