// A Bloom filter over (tag, key) pairs: whether a resource id may have been read before, in
// a few bits per id. The assembler keeps each resource's versions per patient; a resource that
// moves to another patient (a wrong-patient correction) shows up as an id read twice. Keeping a
// map of every id to its patient for that measured a third of the cost of reading a large
// centre (330k resources), most of it garbage collection of the big map's entries; this filter
// costs a string hash and three bit tests per resource, and the rare repeats (and the few false
// positives) are settled once, at the end.

/** Bits per id the filter is sized for (three probes: about 0.1-0.5% false positives). */
const BITS_PER_KEY = 16;
const PROBES = 3;

export class SeenFilter {
  private bits: Uint32Array;
  private mask: number;
  private count = 0;
  private capacity: number;

  /**
   * `refill` adds every (tag, key) added so far, when the filter grows (it keeps no keys of
   * its own); the assembler replays its records. `log2Bits`: initial size (default 1024 bits,
   * enough for one patient's resources, as a per-patient sync maps them).
   */
  constructor(
    private readonly refill: (add: (tag: number, key: string) => void) => void,
    log2Bits = 10,
  ) {
    this.bits = new Uint32Array(2 ** (log2Bits - 5));
    this.mask = 2 ** log2Bits - 1;
    this.capacity = Math.floor(2 ** log2Bits / BITS_PER_KEY);
  }

  /** True when (tag, key) may have been added before (rarely wrongly so); then adds it. */
  testAndAdd(tag: number, key: string): boolean {
    if (this.count >= this.capacity) this.grow();
    this.count += 1;
    return this.probe(tag, key, true);
  }

  private probe(tag: number, key: string, test: boolean): boolean {
    // FNV-1a over the UTF-16 code units, seeded by the tag; the probes are h1 + i * h2
    // (double hashing), h2 odd so that the probes differ.
    let h = (2166136261 ^ Math.imul(tag + 1, 0x9e3779b1)) >>> 0;
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 16777619);
    const h2 = (Math.imul(h ^ (h >>> 15), 0x85ebca6b) ^ (h >>> 13)) | 1;
    const bits = this.bits;
    const mask = this.mask;
    let present = true;
    for (let i = 0; i < PROBES; i++) {
      const bit = (h + Math.imul(i, h2)) & mask;
      const word = bit >>> 5;
      const m = 1 << (bit & 31);
      if (test && (bits[word]! & m) === 0) present = false;
      bits[word] = bits[word]! | m;
    }
    return test && present;
  }

  private grow(): void {
    const log2Bits = Math.log2(this.mask + 1) + 2;
    this.bits = new Uint32Array(2 ** (log2Bits - 5));
    this.mask = 2 ** log2Bits - 1;
    this.capacity = Math.floor(2 ** log2Bits / BITS_PER_KEY);
    this.refill((tag, key) => void this.probe(tag, key, false));
  }
}
