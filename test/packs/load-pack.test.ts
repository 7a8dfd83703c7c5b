// The pack loader: the shipped IBD pack loads with every code citing a source, and a broken
// pack fails with every problem at once, each naming its file, path and what was expected.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import {
  applyCentreOverrides,
  loadMappingPack,
  MappingPackError,
  OverridesError,
  parseCentreOverrides,
} from '../../src/packs/load-pack.js';
import { IBD_PACK_DIR, loadIbdPack } from '../mapping/support/pack.js';

const work = mkdtempSync(join(tmpdir(), 'lhn-pack-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function copyPack(name: string): string {
  const dir = join(work, name);
  cpSync(IBD_PACK_DIR, dir, { recursive: true });
  return dir;
}

function editJson(dir: string, file: string, edit: (data: any) => void): void {
  const path = join(dir, file);
  const data = JSON.parse(readFileSync(path, 'utf8'));
  edit(data);
  writeFileSync(path, JSON.stringify(data));
}

async function loadError(dir: string): Promise<MappingPackError> {
  try {
    await loadMappingPack(dir);
  } catch (err) {
    if (err instanceof MappingPackError) return err;
    throw err;
  }
  throw new Error('expected the pack to fail');
}

describe('loadMappingPack', () => {
  it('when the IBD pack is loaded, then every view compiles for its resource type and the assembly has its defaults', async () => {
    const pack = await loadIbdPack();
    expect(pack.name).toBe('icn-ibd');
    expect(pack.views.observation.resource).toBe('Observation');
    expect(pack.views.medicationStatement.resource).toBe('MedicationStatement');
    expect(pack.assembly.settings).toEqual({
      budesonideCountsAsSteroid: false,
      singleAdministrationCountsAsSteroid: false,
      birthDatePrecision: 'day',
    });
    expect(pack.assembly.fields.pga.link.windowDays).toBe(0);
    expect(pack.assembly.fields.height.link.windowDays).toBe(7);
  });

  it('when the IBD pack is loaded, then every view runs as generated code with every expression on the fast path', async () => {
    const pack = await loadIbdPack();
    for (const [name, view] of Object.entries(pack.views)) {
      expect(view.generated, name).toBe(true);
      expect(
        view.expressions.filter((e) => !e.fastPath).map((e) => `${e.viewPath}: ${e.reason}`),
        name,
      ).toEqual([]);
    }
  });

  it('when the IBD pack is loaded, then every code cites a source that exists, with a citation', async () => {
    const { valueSets } = await loadIbdPack();
    for (const vs of Object.values(valueSets)) {
      const entries: { source?: string }[] = [
        ...(vs.concepts ?? []),
        ...(vs.prefixes ?? []),
        ...(vs.routes ?? []),
        ...(vs.words ?? []),
        ...(vs.names ?? []),
      ];
      for (const entry of entries) {
        expect(entry.source, JSON.stringify(entry)).toBeTruthy();
        expect(vs.sources[entry.source!]?.citation.length).toBeGreaterThan(20);
      }
    }
    const codes = valueSets.steroids.concepts.map((c) => c.code);
    expect(new Set(codes).size).toBe(codes.length);
    expect(valueSets.steroids.concepts.find((c) => c.code === '312615')?.ingredient).toBe(
      'prednisone',
    );
    expect(valueSets.steroids.concepts.find((c) => c.code === '106258')?.systemic).toBe(false);
  });

  it('when several files are broken, then one error lists each problem with file and path', async () => {
    const dir = copyPack('broken');
    editJson(dir, 'valuesets/systemic-corticosteroids.json', (d) => {
      delete d.concepts[3].source;
      d.concepts[4].source = 'my-memory';
      d.concepts[5].ingredient = 'aspirin';
    });
    editJson(dir, 'valuesets/vitals.json', (d) => {
      d.concepts[0].field = 'length';
    });
    writeFileSync(join(dir, 'valuesets/extra.json'), '{}');
    const err = await loadError(dir);
    const where = err.issues.map((i) => `${i.file} ${i.path}`);
    expect(where).toContain('valuesets/systemic-corticosteroids.json concepts[3].source');
    expect(where).toContain('valuesets/systemic-corticosteroids.json concepts[4].source');
    expect(where).toContain('valuesets/systemic-corticosteroids.json concepts[5].ingredient');
    expect(where).toContain('valuesets/vitals.json concepts[0].field');
    expect(where).toContain('valuesets/extra.json ');
    expect(err.message).toMatch(/unknown source "my-memory"; expected one of: pedsnet-rx-steroids/);
    expect(err.message).toMatch(/5 problems/);
    expect(err.issues).toHaveLength(5);
  });

  it('when the assembly spec has a typo or bad YAML, then the path or the parse error is given', async () => {
    const dir = copyPack('assembly-typo');
    const text = readFileSync(join(dir, 'assembly.yaml'), 'utf8');
    writeFileSync(
      join(dir, 'assembly.yaml'),
      text
        .replace('windowDays: 7', 'windowDays: -1')
        .replace('budesonideCountsAsSteroid: false', 'budesonideCountsAsSteroids: false'),
    );
    const err = await loadError(dir);
    expect(err.issues.map((i) => i.path)).toEqual(
      expect.arrayContaining(['fields.height.link.windowDays', 'settings']),
    );
    expect(err.message).toMatch(/budesonideCountsAsSteroids/);

    const bad = copyPack('assembly-yaml');
    writeFileSync(join(bad, 'assembly.yaml'), 'schema: [unclosed');
    const yamlErr = await loadError(bad);
    expect(yamlErr.issues[0]).toMatchObject({ file: 'assembly.yaml', path: '' });
    expect(yamlErr.issues[0]!.message).toMatch(/not valid YAML/);
  });

  it('when a view is invalid or is used for the wrong resource type, then the view file is named', async () => {
    const dir = copyPack('views');
    editJson(dir, 'views/condition.json', (d) => {
      d.select[0].column[0].path = 'getResourceKey(';
    });
    editJson(dir, 'views/patient.json', (d) => {
      d.resource = 'Practitioner';
    });
    const err = await loadError(dir);
    const files = err.issues.map((i) => i.file);
    expect(files).toContain('views/condition.json');
    expect(err.issues.find((i) => i.file === 'views/patient.json')?.message).toMatch(
      /uses this view for Patient resources, but it is a view of Practitioner/,
    );
  });

  it('when the folder is empty, then each missing file is reported', async () => {
    const err = await loadError(mkdtempSync(join(work, 'empty-')));
    expect(err.issues.map((i) => i.file)).toEqual(
      expect.arrayContaining([
        'assembly.yaml',
        'valuesets/pga.json',
        'valuesets/systemic-corticosteroids.json',
      ]),
    );
  });
});

describe('centre overrides', () => {
  const BRIEF_EXAMPLE = `
valueSets:
  pga:
    questions: [{ system: 'http://centre.example/flowsheet-row', code: '1234' }]
    answers:   [{ system: 'http://centre.example/pga-answer', code: 'Q', category: quiescent }, { text: 'Inactive', category: quiescent }]
  systemic-corticosteroids:
    include: [{ system: 'http://www.nlm.nih.gov/research/umls/rxnorm', code: '312615', ingredient: prednisolone, systemic: true }]
  ibd-diagnoses:
    include: [{ system: 'http://centre.example/dx', code: 'CD1', diagnosis: crohns_disease }]
links: { pga: { windowDays: 0 }, height: { windowDays: 14 } }
settings: { budesonideCountsAsSteroid: true, birthDatePrecision: month }
`;

  it('when the documented overrides format is parsed and applied, then codes, links and settings layer on the pack without changing it', async () => {
    const pack = await loadIbdPack();
    const overrides = parseCentreOverrides(parseYaml(BRIEF_EXAMPLE), 'centres/east.yaml');
    const applied = applyCentreOverrides(pack, overrides);
    expect(applied.valueSets.pga.questions).toContainEqual({
      system: 'http://centre.example/flowsheet-row',
      code: '1234',
    });
    expect(applied.valueSets.diagnoses.concepts.at(-1)).toMatchObject({
      code: 'CD1',
      source: 'centre-override',
    });
    expect(applied.assembly.fields.height.link).toEqual({
      encounterReference: true,
      sameDay: true,
      windowDays: 14,
    });
    expect(applied.assembly.fields.weight.link.windowDays).toBe(7);
    expect(applied.assembly.settings).toEqual({
      budesonideCountsAsSteroid: true,
      singleAdministrationCountsAsSteroid: false,
      birthDatePrecision: 'month',
    });
    expect(pack.valueSets.pga.questions).toEqual([]);
    expect(pack.assembly.settings.budesonideCountsAsSteroid).toBe(false);
  });

  it('when overrides have a typo or a wrong category, then the error names the centre file and the path', () => {
    const run = () =>
      parseCentreOverrides(
        {
          valueSets: { pga: { answers: [{ system: 's', code: 'c', category: 'remission' }] } },
          link: {},
        },
        'centres/east.yaml',
      );
    expect(run).toThrow(OverridesError);
    try {
      run();
    } catch (err) {
      const e = err as OverridesError;
      expect(e.message).toMatch(/^centres\/east\.yaml: invalid mapping overrides/);
      expect(e.issues.map((i) => i.path)).toEqual(
        expect.arrayContaining(['valueSets.pga.answers[0]', '']),
      );
      expect(e.message).toMatch(/Unrecognized key: "link"/);
    }
  });

  it('when no overrides are given, then they parse to empty layers', () => {
    expect(parseCentreOverrides(undefined, 'x')).toEqual({
      valueSets: {},
      links: {},
      settings: {},
    });
  });
});
