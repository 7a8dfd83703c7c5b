// A small deterministic pseudo-random generator (xorshift32) for tests that draw many
// inputs by hand, so a failure reproduces from its seed.

/** Returns `int(n)`, a whole number in [0, n), and `unit()`, a number in [0, 1). */
export function xorshift(seed: number): { int(n: number): number; unit(): number } {
  let state = seed | 0 || 1;
  const step = (): number => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return state >>> 0;
  };
  return { int: (n) => step() % n, unit: () => step() / 2 ** 32 };
}
