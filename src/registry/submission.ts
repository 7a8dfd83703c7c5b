// The registry contract, version 1: what lhn-bridge sends for each visit. Strict (unknown
// keys are rejected) and pseudonymous by construction: there is no field that could hold a
// name, MRN, address or any other direct identifier. docs/registry-submission.v1.schema.json
// is generated from this schema.
import { z } from 'zod';

const hex64 = z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 hex characters');
const isoDate = z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'expected YYYY-MM-DD');

export const PGA_CATEGORIES = ['quiescent', 'mild', 'moderate', 'severe'] as const;
export type PgaCategory = (typeof PGA_CATEGORIES)[number];

export const DIAGNOSES = ['crohns_disease', 'ulcerative_colitis', 'ibd_unclassified'] as const;
export type Diagnosis = (typeof DIAGNOSES)[number];

export const STEROID_INGREDIENTS = [
  'prednisone',
  'prednisolone',
  'methylprednisolone',
  'hydrocortisone',
  'dexamethasone',
  'budesonide',
  'betamethasone',
  'triamcinolone',
  'cortisone',
  'deflazacort',
] as const;

/** Kinds of data-quality finding carried with a submission. */
export const FINDING_KINDS = [
  'missing-pga',
  'unmapped-code',
  'conflicting-values',
  'implausible-value',
  'unconvertible-unit',
  'missing-diagnosis',
  'missing-birth-date',
  'text-only-medication',
  'missing-value',
] as const;
export type FindingKind = (typeof FINDING_KINDS)[number];

/** A source resource used for a submission: type, id and version (provenance). */
export const SourceRefSchema = z
  .object({
    resourceType: z.string().regex(/^[A-Z][A-Za-z]+$/),
    id: z.string().min(1).max(64).describe('The resource id at the centre EHR.'),
    versionId: z.string().max(64).optional().describe('meta.versionId of the version used.'),
    lastUpdated: z.string().optional().describe('meta.lastUpdated of the version used.'),
  })
  .strict()
  .describe('A source FHIR resource (and version) a submission was built from.');
export type SourceRef = z.infer<typeof SourceRefSchema>;

export const FindingSchema = z
  .object({
    kind: z.enum(FINDING_KINDS),
    /** The registry field concerned, e.g. `pga`, `height`, `steroidUse`. */
    field: z
      .string()
      .min(1)
      .describe('The registry field concerned, e.g. pga, height, steroidUse.'),
    /** Human-readable detail; never holds resource text or identifiers. */
    message: z
      .string()
      .min(1)
      .describe('Human-readable detail; never holds resource text or identifiers.'),
    /** For unmapped codes: `system|code`. */
    code: z.string().optional().describe('For unmapped codes: system|code.'),
    /** The resource concerned, as `Type/id`. */
    resource: z.string().optional().describe('The source resource concerned, as Type/id.'),
  })
  .strict()
  .describe('A data-quality finding: a missing, unmappable, implausible or conflicting value.');
export type Finding = z.infer<typeof FindingSchema>;

const measurement = (unit: string) =>
  z
    .object({ value: z.number().finite(), unit: z.literal(unit) })
    .strict()
    .nullable();

export const SteroidEvidenceSchema = z
  .object({
    ingredient: z.enum(STEROID_INGREDIENTS),
    /** How it was recognised. */
    matchedBy: z.enum(['ingredient-code', 'product-code', 'medication-ingredient', 'text']),
    source: SourceRefSchema,
  })
  .strict();

/** One visit: an upsert keyed by `visitKey`. */
export const VisitSubmissionSchema = z
  .object({
    schema: z.literal('lhn-bridge/registry-submission/v1'),
    kind: z.literal('visit'),
    /** Deterministic: visit key + content hash. Same content, same id. */
    submissionId: z
      .string()
      .regex(/^[0-9a-f]{32}-[0-9a-f]{16}$/)
      .describe('visitKey (first 32 hex) + contentHash (first 16 hex): same content, same id.'),
    centreId: z.string().min(1),
    /** HMAC-SHA256 of the centre and source Patient id with the deployment secret. */
    patientKey: hex64.describe(
      'HMAC-SHA256 of centreId|Patient/id with the deployment secret: links a patient across visits, never reversible.',
    ),
    /** HMAC-SHA256 of the centre and source Encounter id with the deployment secret. */
    visitKey: hex64.describe(
      'HMAC-SHA256 of centreId|Encounter/id with the deployment secret: the upsert key of a visit.',
    ),
    /** SHA-256 of the canonical JSON of everything below (the clinical content). */
    contentHash: hex64.describe(
      'SHA-256 of the canonical JSON (keys sorted) of the submission without submissionId and contentHash.',
    ),
    visit: z
      .object({
        date: isoDate,
        /** Registry visit type, from the Encounter class/type mapping. */
        type: z.string().min(1),
      })
      .strict(),
    patient: z
      .object({
        /** As precise as the registry needs for growth z-scores (a pack setting). */
        birthDate: z
          .string()
          .regex(/^\d{4}(-\d{2}(-\d{2})?)?$/)
          .nullable(),
        sex: z.enum(['male', 'female', 'other', 'unknown']),
        ageAtVisitMonths: z.number().min(0).nullable(),
      })
      .strict(),
    diagnosis: z.enum(DIAGNOSES).nullable().describe('The latest recorded IBD diagnosis.'),
    pga: z
      .enum(PGA_CATEGORIES)
      .nullable()
      .describe('Physician Global Assessment at the visit; null when missing or unmappable.'),
    /** PGA quiescent at the visit (ICN "inactive disease"); null when PGA is unknown. */
    remission: z
      .boolean()
      .nullable()
      .describe('PGA quiescent at the visit (ICN "inactive disease"); null when PGA is unknown.'),
    /** A systemic corticosteroid active on the visit date. */
    steroidUse: z.boolean().describe('A systemic corticosteroid was active on the visit date.'),
    steroids: z
      .array(SteroidEvidenceSchema)
      .describe('The medication statements/requests that made steroidUse true.'),
    height: measurement('cm').describe(
      'Body height, cm, 1 decimal; null when missing or unusable.',
    ),
    weight: measurement('kg').describe(
      'Body weight, kg, 1 decimal; null when missing or unusable.',
    ),
    bmi: measurement('kg/m2').describe('BMI, kg/m2, 1 decimal; null when missing or unusable.'),
    findings: z.array(FindingSchema),
    provenance: z
      .array(SourceRefSchema)
      .min(1)
      .describe('Every source resource (and version) the values came from, sorted.'),
  })
  .strict()
  .describe('A visit: upsert the registry record keyed by visitKey.');
export type VisitSubmission = z.infer<typeof VisitSubmissionSchema>;

export const RetractionSchema = z
  .object({
    schema: z.literal('lhn-bridge/registry-submission/v1'),
    kind: z.literal('retraction'),
    submissionId: z.string().regex(/^[0-9a-f]{32}-[0-9a-f]{16}$/),
    centreId: z.string().min(1),
    patientKey: hex64,
    visitKey: hex64,
    contentHash: hex64,
    reason: z.enum(['deleted', 'entered-in-error']),
    provenance: z.array(SourceRefSchema),
  })
  .strict()
  .describe(
    'A retraction: withdraw the visit with this visitKey (deleted or entered in error at the source).',
  );
export type Retraction = z.infer<typeof RetractionSchema>;

export const RegistrySubmissionSchema = z.discriminatedUnion('kind', [
  VisitSubmissionSchema,
  RetractionSchema,
]);
/** What the registry receives: a visit (upsert) or a retraction of an earlier visit. */
export type RegistrySubmission = z.infer<typeof RegistrySubmissionSchema>;
