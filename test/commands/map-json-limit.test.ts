// `map` reads a .json file (a Bundle) as one JSON value, so it is held whole in memory: above
// MAX_JSON_FILE_BYTES it is refused with a message saying to convert it to NDJSON, instead of
// V8's ERR_STRING_TOO_LONG surfacing as "cannot be read". An NDJSON file named .json gets a
// hint. The limit is injected small here; no huge file is written.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MAX_JSON_FILE_BYTES, readFhirInput } from '../../src/commands/map.js';

const work = mkdtempSync(join(tmpdir(), 'lhn-map-limit-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function readAll(path: string, options?: { maxJsonBytes?: number }): Promise<unknown[]> {
  const out: unknown[] = [];
  for await (const r of readFhirInput(path, options)) out.push(r);
  return out;
}

const patients = Array.from({ length: 40 }, (_, i) => ({ resourceType: 'Patient', id: `p${i}` }));

describe('map with a large JSON Bundle', () => {
  const bundle = join(work, 'bundle.json');
  writeFileSync(
    bundle,
    JSON.stringify({
      resourceType: 'Bundle',
      type: 'collection',
      entry: patients.map((resource) => ({ resource })),
    }),
  );

  it('when the limit is 256 MiB, then it is a named constant', () => {
    expect(MAX_JSON_FILE_BYTES).toBe(256 * 1024 * 1024);
  });

  it('when a Bundle is over the limit, then it is refused with a message saying to convert it to NDJSON', async () => {
    await expect(readAll(bundle, { maxJsonBytes: 1024 })).rejects.toThrow(
      'bundle.json: a Bundle over 1024 bytes cannot be read as one JSON value; convert it to NDJSON, one resource per line',
    );
    await expect(readAll(bundle, { maxJsonBytes: 1024 })).rejects.not.toThrow(/cannot be read \(/);
  });

  it('when a Bundle is within the limit, then its resources are read', async () => {
    expect(await readAll(bundle, { maxJsonBytes: 1024 * 1024 })).toHaveLength(40);
  });

  it('when an NDJSON file of any size is given, then the limit does not apply to it', async () => {
    const ndjson = join(work, 'big.ndjson');
    writeFileSync(ndjson, patients.map((p) => JSON.stringify(p)).join('\n'));
    expect(await readAll(ndjson, { maxJsonBytes: 16 })).toHaveLength(40);
  });

  it('when a .json file holds NDJSON, then the message says it looks like NDJSON and to name it .ndjson', async () => {
    const mislabelled = join(work, 'export.json');
    writeFileSync(mislabelled, patients.map((p) => JSON.stringify(p)).join('\n'));
    await expect(readAll(mislabelled)).rejects.toThrow(
      'export.json: not valid JSON at line 2, column 1 (unexpected content after the JSON value); it looks like NDJSON (one resource per line): name it .ndjson',
    );
  });

  it('when a .json file is broken elsewhere, then no NDJSON hint is given', async () => {
    const broken = join(work, 'broken.json');
    writeFileSync(broken, '{"resourceType": "Patient",\n "id": }');
    await expect(readAll(broken)).rejects.toThrow(/^broken\.json: not valid JSON at line 2[^;]*$/);
  });
});
