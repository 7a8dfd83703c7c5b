import { readdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPatientSpool } from '../../src/sync/bulk-spool.js';

describe('patient spool for bulk exports', () => {
  let parent: string;
  beforeAll(async () => {
    parent = await mkdtemp(join(tmpdir(), 'lhn-spool-test-'));
  });
  afterAll(async () => {
    await rm(parent, { recursive: true, force: true });
  });

  it('when resources arrive type by type, then they come back grouped by patient with the Medications they reference', async () => {
    const spool = await createPatientSpool({ partitions: 4, dir: parent });
    await spool.add(undefined, { resourceType: 'Medication', id: 'm1', code: { text: 'x' } });
    for (const p of ['a', 'b', 'c', 'd', 'e'])
      await spool.add(p, { resourceType: 'Patient', id: p });
    for (const p of ['a', 'b', 'c', 'd', 'e'])
      await spool.add(p, {
        resourceType: 'Encounter',
        id: `${p}-e1`,
        subject: { reference: `Patient/${p}` },
      });
    await spool.add('c', {
      resourceType: 'MedicationStatement',
      id: 'c-ms',
      subject: { reference: 'Patient/c' },
      medicationReference: { reference: 'Medication/m1' },
    });
    expect(spool.patientIds().sort()).toEqual(['a', 'b', 'c', 'd', 'e']);
    const out = new Map<string, string[]>();
    for await (const { patientId, resources } of spool.patients())
      out.set(
        patientId,
        resources.map((r) => `${r.resourceType}/${r.id}`),
      );
    expect(out.size).toBe(5);
    expect(out.get('a')).toEqual(['Patient/a', 'Encounter/a-e1']);
    expect(out.get('c')).toEqual([
      'Patient/c',
      'Encounter/c-e1',
      'MedicationStatement/c-ms',
      'Medication/m1',
    ]);
    await spool.close();
    expect(await readdir(parent)).toEqual([]);
  });

  it('when the spool writes, then its directory and files are private to the process user', async () => {
    const spool = await createPatientSpool({ partitions: 1, dir: parent });
    await spool.add('a', { resourceType: 'Patient', id: 'a' });
    const [dir] = await readdir(parent);
    const dirMode = (await stat(join(parent, dir!))).mode & 0o777;
    const [file] = await readdir(join(parent, dir!));
    await new Promise((r) => setTimeout(r, 20));
    const fileMode = (await stat(join(parent, dir!, file!))).mode & 0o777;
    expect(dirMode).toBe(0o700);
    expect(fileMode & 0o077).toBe(0);
    await spool.close();
  });

  it('when the spool is ordered, then patients come back in id order, each with its resources in the order added', async () => {
    const spool = await createPatientSpool({ partitions: 8, dir: parent, ordered: true });
    const ids = Array.from({ length: 60 }, (_, i) => `p${(i * 37) % 60}`).concat(['q"\\x', 'a']);
    for (const p of ids) await spool.add(p, { resourceType: 'Patient', id: p });
    for (const p of ids) await spool.add(p, { resourceType: 'Observation', id: `${p}-o` });
    const seen: string[] = [];
    for await (const { patientId, resources } of spool.patients()) {
      seen.push(patientId);
      expect(resources.map((r) => r.id)).toEqual([patientId, `${patientId}-o`]);
    }
    expect(seen).toEqual([...ids].sort());
    await spool.close();
  });
});
