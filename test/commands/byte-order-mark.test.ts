// Files written on Windows (Notepad, Excel's "CSV UTF-8", some EHR export tools) often start
// with a UTF-8 byte order mark. Node keeps it when decoding and JSON.parse refuses it, so a
// BOM used to fail a whole `map` input ("not valid JSON at column 1") or a config file. Each
// reader of files people make now drops a leading BOM; a BOM anywhere else is still an error.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readFhirInput } from '../../src/commands/map.js';
import { loadCentreFile } from '../../src/config/centre.js';
import { loadServiceConfig } from '../../src/config/service.js';
import { loadMappingPack } from '../../src/packs/load-pack.js';
import { SECRET } from '../sync/helpers.js';

const BOM = '\uFEFF';
const work = mkdtempSync(join(tmpdir(), 'lhn-bom-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function readAll(path: string): Promise<unknown[]> {
  const out: unknown[] = [];
  for await (const r of readFhirInput(path)) out.push(r);
  return out;
}

const patients = [
  { resourceType: 'Patient', id: 'p1' },
  { resourceType: 'Patient', id: 'p2' },
];

describe('files that start with a byte order mark', () => {
  it('when an NDJSON export starts with a BOM, then every line is read, the first included', async () => {
    const file = join(work, 'Patient.000.ndjson');
    writeFileSync(file, `${BOM}${patients.map((p) => JSON.stringify(p)).join('\r\n')}\r\n`);
    expect(await readAll(file)).toEqual(patients);
  });

  it('when a Bundle file starts with a BOM, then its resources are read', async () => {
    const file = join(work, 'bundle.json');
    const bundle = {
      resourceType: 'Bundle',
      type: 'collection',
      entry: patients.map((resource) => ({ resource })),
    };
    writeFileSync(file, `${BOM}${JSON.stringify(bundle)}`);
    expect(await readAll(file)).toEqual(patients);
  });

  it('when a BOM is in the middle of an NDJSON file, then that line is still refused, by number', async () => {
    const file = join(work, 'Mid.ndjson');
    writeFileSync(file, `${JSON.stringify(patients[0])}\n${BOM}${JSON.stringify(patients[1])}\n`);
    await expect(readAll(file)).rejects.toThrow(/Mid\.ndjson line 2: not valid JSON/);
  });

  it('when a centre file (YAML or JSON) starts with a BOM, then it loads as without one', async () => {
    const centre = {
      id: 'centre-bom',
      name: 'Centre BOM',
      fhir: { baseUrl: 'https://ehr.example.org/fhir/R4' },
      auth: { clientId: 'abc', privateKeyFile: 'keys/a.json', kid: 'k1' },
      cohort: { group: 'ibd-cohort' },
    };
    const json = join(work, 'centre-bom.json');
    writeFileSync(json, `${BOM}${JSON.stringify(centre)}`);
    expect((await loadCentreFile(json)).id).toBe('centre-bom');
    const yaml = join(work, 'centre-bom.yaml');
    writeFileSync(
      yaml,
      `${BOM}id: centre-bom\nname: Centre BOM\nfhir: { baseUrl: 'https://ehr.example.org/fhir/R4' }\n` +
        `auth: { clientId: abc, privateKeyFile: keys/a.json, kid: k1 }\ncohort: { group: ibd-cohort }\n`,
    );
    expect((await loadCentreFile(yaml)).id).toBe('centre-bom');
  });

  it('when the LHN_CONFIG JSON file starts with a BOM, then it loads', () => {
    const file = join(work, 'service.json');
    writeFileSync(file, `${BOM}${JSON.stringify({ pseudonymSecret: SECRET })}`);
    expect(loadServiceConfig({ LHN_CONFIG: file }).pseudonymSecret).toBe(SECRET);
  });

  it('when a data manager saves a value set of the pack with a BOM, then the pack loads the same', async () => {
    const source = new URL('../../mappings/ibd', import.meta.url).pathname;
    const copy = join(work, 'ibd');
    cpSync(source, copy, { recursive: true });
    const valueSet = join(copy, 'valuesets', 'vitals.json');
    writeFileSync(valueSet, `${BOM}${readFileSync(valueSet, 'utf8')}`);
    const assembly = join(copy, 'assembly.yaml');
    writeFileSync(assembly, `${BOM}${readFileSync(assembly, 'utf8')}`);
    const [original, edited] = await Promise.all([loadMappingPack(source), loadMappingPack(copy)]);
    expect(edited.valueSets).toEqual(original.valueSets);
    expect(edited.assembly).toEqual(original.assembly);
  });
});
