// A bulk export arrives one resource type at a time (all Patients, then all Encounters...),
// but visits are assembled per patient. Holding a large centre in memory is not an option,
// so resources are spooled to local NDJSON files partitioned by a hash of the patient id,
// then read back one partition at a time, grouped by patient. Memory holds one partition.
// The files hold PHI: they live in a private temporary directory (0700, files 0600) and are
// deleted as soon as they are read, and the whole directory when the spool closes.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { parseReference } from '../fhir/pull-search.js';
import type { FhirResource } from '../fhir/types.js';

export interface PatientResources {
  patientId: string;
  resources: FhirResource[];
}

export interface PatientSpool {
  /** Adds a resource of a patient; resources of no patient (Medication) are kept aside. */
  add(patientId: string | undefined, resource: FhirResource): Promise<void>;
  /** Patients that had at least one resource. */
  patientIds(): string[];
  /** Reads the spool back, one patient at a time (with the Medications they reference). */
  patients(): AsyncGenerator<PatientResources>;
  /** Deletes every file; safe to call more than once. */
  close(): Promise<void>;
}

export interface PatientSpoolOptions {
  /** Partitions (files); default 256. */
  partitions?: number;
  /** Parent directory; default the OS temporary directory. */
  dir?: string;
  /**
   * Reads a Medication that patients reference but the export did not contain (servers may
   * leave types outside the Patient compartment out of a Patient-level export); undefined
   * when the EHR has none. Each id is read once. Without it such references stay unresolved.
   */
  readMedication?: (id: string) => Promise<FhirResource | undefined>;
}

/** Creates a spool in a new private temporary directory. */
export async function createPatientSpool(options: PatientSpoolOptions = {}): Promise<PatientSpool> {
  const partitions = options.partitions ?? 256;
  const dir = await mkdtemp(join(options.dir ?? tmpdir(), 'lhn-spool-'));
  const streams = new Map<number, WriteStream>();
  // Resources of no patient (Medications), kept as JSON text: a third of the parsed size.
  const shared = new Map<string, string>();
  const patients = new Set<string>();
  /** Referenced Medications the EHR does not have (not read again). */
  const missing = new Set<string>();
  let closed = false;

  const fileOf = (n: number) => join(dir, `p${n}.ndjson`);
  const partitionOf = (patientId: string) =>
    createHash('sha1').update(patientId).digest().readUInt32BE(0) % partitions;

  async function endStreams(): Promise<void> {
    await Promise.all(
      [...streams.values()].map(
        (s) => new Promise<void>((resolve) => (s.closed ? resolve() : s.end(() => resolve()))),
      ),
    );
  }

  return {
    async add(patientId, resource) {
      if (!patientId) {
        if (resource.id)
          shared.set(`${resource.resourceType}/${resource.id}`, JSON.stringify(resource));
        return;
      }
      patients.add(patientId);
      const n = partitionOf(patientId);
      let stream = streams.get(n);
      if (!stream) {
        stream = createWriteStream(fileOf(n), { flags: 'a', mode: 0o600 });
        streams.set(n, stream);
      }
      if (!stream.write(`${JSON.stringify([patientId, resource])}\n`)) await once(stream, 'drain');
    },

    patientIds: () => [...patients],

    async *patients() {
      await endStreams();
      for (const n of [...streams.keys()].sort((a, b) => a - b)) {
        const groups = new Map<string, FhirResource[]>();
        const lines = createInterface({
          input: createReadStream(fileOf(n), 'utf8'),
          crlfDelay: Infinity,
        });
        for await (const line of lines) {
          if (!line) continue;
          const [patientId, resource] = JSON.parse(line) as [string, FhirResource];
          let list = groups.get(patientId);
          if (!list) groups.set(patientId, (list = []));
          list.push(resource);
        }
        await rm(fileOf(n), { force: true });
        for (const [patientId, resources] of groups) {
          const wanted = new Set<string>();
          for (const r of resources) {
            const ref = parseReference(
              (r.medicationReference as { reference?: string } | undefined)?.reference,
            );
            if (ref?.type === 'Medication') wanted.add(`Medication/${ref.id}`);
          }
          for (const key of wanted) {
            let medication = shared.get(key);
            if (medication === undefined && options.readMedication && !missing.has(key)) {
              const read = await options.readMedication(key.slice('Medication/'.length));
              if (read) shared.set(key, (medication = JSON.stringify(read)));
              else missing.add(key);
            }
            if (medication) resources.push(JSON.parse(medication) as FhirResource);
          }
          groups.delete(patientId);
          yield { patientId, resources };
        }
      }
    },

    async close() {
      if (closed) return;
      closed = true;
      await endStreams();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
