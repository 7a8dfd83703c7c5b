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

/** The patient a resource belongs to, as the bulk sync groups them (its own id for a Patient). */
export function patientOf(resource: FhirResource): string | undefined {
  if (resource.resourceType === 'Patient') return resource.id;
  for (const field of ['subject', 'patient']) {
    const ref = parseReference((resource[field] as { reference?: string } | undefined)?.reference);
    if (ref?.type === 'Patient') return ref.id;
  }
  return undefined;
}

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
  /**
   * patients() yields the patients in id order (sorted as strings, as the assembler sorts
   * them), at the cost of one more pass over the files: they are regrouped into ranges of
   * ids first. Without it the order is by partition.
   */
  ordered?: boolean;
}

/** The patient id that starts a spool line (`["id",{...}]`), read without parsing the rest. */
function leadingPatientId(line: string): string {
  let i = 2;
  while (i < line.length && line[i] !== '"') i += line[i] === '\\' ? 2 : 1;
  return JSON.parse(line.slice(1, i + 1)) as string;
}

/** Creates a spool in a new private temporary directory. */
export async function createPatientSpool(options: PatientSpoolOptions = {}): Promise<PatientSpool> {
  const partitions = options.partitions ?? 256;
  const dir = await mkdtemp(join(options.dir ?? tmpdir(), 'lhn-spool-'));
  let streams = new Map<number, WriteStream>();
  /** File name prefix: `p` (by hash), then `r` once regrouped into ranges of ids. */
  let prefix = 'p';
  // Resources of no patient (Medications), kept as JSON text: a third of the parsed size.
  const shared = new Map<string, string>();
  const patients = new Set<string>();
  /** Referenced Medications the EHR does not have (not read again). */
  const missing = new Set<string>();
  let closed = false;

  const fileOf = (n: number) => join(dir, `${prefix}${n}.ndjson`);
  const partitionOf = (patientId: string) =>
    createHash('sha1').update(patientId).digest().readUInt32BE(0) % partitions;

  async function endStreams(): Promise<void> {
    await Promise.all(
      [...streams.values()].map(
        (s) => new Promise<void>((resolve) => (s.closed ? resolve() : s.end(() => resolve()))),
      ),
    );
  }

  /** Rewrites the hash partitions as partitions of consecutive ids (in sorted order). */
  async function regroupByRange(): Promise<void> {
    const sorted = [...patients].sort();
    const ranges = Math.max(1, Math.min(partitions, streams.size));
    /** The first id of each range after the first. */
    const bounds: string[] = [];
    for (let r = 1; r < ranges; r++) bounds.push(sorted[Math.floor((r * sorted.length) / ranges)]!);
    const rangeOf = (id: string): number => {
      let lo = 0;
      let hi = bounds.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (bounds[mid]! <= id) lo = mid + 1;
        else hi = mid;
      }
      return lo;
    };
    const hashed = [...streams.keys()].sort((a, b) => a - b).map(fileOf);
    prefix = 'r';
    streams = new Map();
    for (const file of hashed) {
      const lines = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
      for await (const line of lines) {
        if (!line) continue;
        const n = rangeOf(leadingPatientId(line));
        let stream = streams.get(n);
        if (!stream) {
          stream = createWriteStream(fileOf(n), { flags: 'a', mode: 0o600 });
          streams.set(n, stream);
        }
        if (!stream.write(`${line}\n`)) await once(stream, 'drain');
      }
      await rm(file, { force: true });
    }
    await endStreams();
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
      if (options.ordered && prefix === 'p') await regroupByRange();
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
        const ids = [...groups.keys()];
        if (options.ordered) ids.sort();
        for (const patientId of ids) {
          const resources = groups.get(patientId)!;
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
