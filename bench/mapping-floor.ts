// `npm run bench:mapping-floor`: a floor under bench:mapping's ratio. A hand-written mapper
// that does much less than the IBD pack (and is not correct: it is only for timing) runs on
// the same NDJSON and the same clock, so the line says how close to JSON.parse any mapper can
// come on this machine while still doing the work every submission needs:
//   - JSON.parse of every line;
//   - a small record per Observation, Encounter, Patient and medication use, kept per
//     patient until the end (input may come grouped by type, as a bulk export writes it, so
//     nothing can be assembled before the last line);
//   - per visit: the latest vital of each kind on the visit's encounter or UTC day, steroid use
//     by name in the medication text, a content text, one SHA-256 and one HMAC-SHA256 key.
// It leaves out what the pack does on top: views, value sets, versions and repeats across
// patients, time zones, units, findings, PGA answers, steroid forms and routes, Medication
// references, diagnoses, provenance order, retractions, schema checks.
//
// Prints: `bench mapping-floor: parse+extract+assemble F res/s; JSON.parse J res/s; ratio F/J`
import * as crypto from 'node:crypto';
import { parseArgs } from 'node:util';
import { createHmacHex } from '../src/registry/keys.js';
import { centreNdjson, cpuMs, forEachLine, parseOnly } from './centre-ndjson.js';

const { values } = parseArgs({
  options: {
    patients: { type: 'string', default: '10000' },
    rounds: { type: 'string', default: '3' },
  },
});
const rounds = Math.max(1, Number(values.rounds));
const { chunks, resources } = centreNdjson(Number(values.patients));

interface Json {
  [key: string]: unknown;
}
interface ObsRecord {
  id: string;
  lastUpdated: string;
  kind: number;
  encounter: string | null;
  day: number;
  value: number | null;
}
interface VisitRecord {
  id: string;
  start: string;
}
interface UseRecord {
  id: string;
  steroid: boolean;
  start: string;
  end: string;
}
interface Bucket {
  observations: ObsRecord[];
  visits: VisitRecord[];
  uses: UseRecord[];
}

const DAY_MS = 86_400_000;
/** LOINC code to the vital's slot; any other coded Observation takes slot 0 (as a PGA). */
const VITAL_SLOT = new Map([
  ['8302-2', 1],
  ['29463-7', 2],
  ['39156-5', 3],
]);
const STEROID_NAME =
  /prednisone|prednisolone|methylprednisolone|hydrocortisone|dexamethasone|budesonide/i;

/** SHA-256 hex in one call where Node has crypto.hash (>= 20.12), as src/registry/keys.ts. */
const oneShot = (crypto as { hash?: typeof crypto.hash }).hash;
const sha256Hex = (s: string): string =>
  oneShot ? oneShot('sha256', s, 'hex') : crypto.createHash('sha256').update(s).digest('hex');

const text = (v: unknown): string | null => (typeof v === 'string' ? v : null);
const obj = (v: unknown): Json | null => (v !== null && typeof v === 'object' ? (v as Json) : null);
const idOfReference = (v: unknown): string | null => {
  const reference = text(obj(v)?.reference);
  return reference === null ? null : reference.slice(reference.indexOf('/') + 1);
};

function floorMap(): number {
  const buckets = new Map<string, Bucket>();
  const bucketOf = (patient: string): Bucket => {
    let b = buckets.get(patient);
    if (!b) {
      b = { observations: [], visits: [], uses: [] };
      buckets.set(patient, b);
    }
    return b;
  };
  forEachLine(chunks, (line) => {
    const r = JSON.parse(line) as Json;
    const patient = idOfReference(r.subject);
    const id = text(r.id);
    if (patient === null || id === null) return;
    switch (r.resourceType) {
      case 'Observation': {
        const coding = obj((obj(r.code)?.coding as unknown[] | undefined)?.[0]);
        if (!coding) return;
        const when = text(r.effectiveDateTime);
        bucketOf(patient).observations.push({
          id,
          lastUpdated: text(obj(r.meta)?.lastUpdated) ?? '',
          kind: VITAL_SLOT.get(text(coding.code) ?? '') ?? 0,
          encounter: idOfReference(r.encounter),
          day: when === null ? -1 : Math.floor(Date.parse(when) / DAY_MS),
          value: (obj(r.valueQuantity)?.value as number | undefined) ?? null,
        });
        return;
      }
      case 'Encounter': {
        const start = text(obj(r.period)?.start);
        if (r.status === 'finished' && start !== null) bucketOf(patient).visits.push({ id, start });
        return;
      }
      case 'MedicationStatement':
      case 'MedicationRequest': {
        const concept = obj(r.medicationCodeableConcept);
        const name = text(concept?.text) ?? text(obj(r.medicationReference)?.display) ?? '';
        const period = obj(r.effectivePeriod);
        bucketOf(patient).uses.push({
          id,
          steroid: STEROID_NAME.test(name),
          start: text(period?.start) ?? text(r.authoredOn) ?? '',
          end: text(period?.end) ?? '9999',
        });
        return;
      }
      default:
        return;
    }
  });

  const key = createHmacHex('bench-mapping-floor-secret-0123456789');
  const submissions: Json[] = [];
  const best: (ObsRecord | null)[] = [null, null, null, null];
  for (const [patient, bucket] of buckets) {
    const patientKey = key(`floor|Patient/${patient}`);
    for (const visit of bucket.visits) {
      const date = visit.start.slice(0, 10);
      const day = Math.floor(Date.parse(visit.start) / DAY_MS);
      best.fill(null);
      for (const o of bucket.observations) {
        if (o.encounter !== visit.id && o.day !== day) continue;
        const current = best[o.kind];
        if (!current || o.lastUpdated > current.lastUpdated) best[o.kind] = o;
      }
      let steroidUse = false;
      for (const u of bucket.uses)
        if (u.steroid && u.start <= date && u.end >= date) steroidUse = true;
      const visitKey = key(`floor|Encounter/${visit.id}`);
      let content = `{"patientKey":"${patientKey}","provenance":[{"id":"${visit.id}","resourceType":"Encounter"}`;
      for (const o of best) if (o) content += `,{"id":"${o.id}","lastUpdated":"${o.lastUpdated}"}`;
      content += `],"steroidUse":${steroidUse},"visit":{"date":"${date}"},"visitKey":"${visitKey}","vitals":[${best[1]?.value ?? null},${best[2]?.value ?? null},${best[3]?.value ?? null}]}`;
      submissions.push({
        visitKey,
        patientKey,
        contentHash: sha256Hex(content),
        date,
        pgaSource: best[0]?.id ?? null,
        height: best[1]?.value ?? null,
        weight: best[2]?.value ?? null,
        bmi: best[3]?.value ?? null,
        steroidUse,
      });
    }
  }
  return submissions.length;
}

let bestJ = 0;
let bestF = 0;
for (let round = 0; round < rounds; round++) {
  const j = cpuMs(() => parseOnly(chunks));
  const f = cpuMs(() => void floorMap());
  bestJ = Math.max(bestJ, resources / (j / 1000));
  bestF = Math.max(bestF, resources / (f / 1000));
}
console.log(
  `bench mapping-floor: parse+extract+assemble ${Math.round(bestF)} res/s; ` +
    `JSON.parse ${Math.round(bestJ)} res/s; ratio ${(bestF / bestJ).toFixed(2)}`,
);
