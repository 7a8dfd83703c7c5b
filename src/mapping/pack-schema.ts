// The shape of a mapping pack's declarative files: value sets and the registry assembly spec.
// Kept in the pure mapping core (zod only, no files) so that the loader, the mapper and the
// centre overrides all validate against the same definitions.
import { z } from 'zod';
import { DIAGNOSES, PGA_CATEGORIES, STEROID_INGREDIENTS } from '../registry/submission.js';
import type { CompiledView } from './view/index.js';

export const RXNORM = 'http://www.nlm.nih.gov/research/umls/rxnorm';
export const LOINC = 'http://loinc.org';
export const SNOMED = 'http://snomed.info/sct';
export const ICD10CM = 'http://hl7.org/fhir/sid/icd-10-cm';
export const UCUM = 'http://unitsofmeasure.org';
export const ACT_CODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';

const nonEmpty = z.string().min(1);
/** Every code in a pack names where it came from: a key of the file's `sources` table. */
const sourceKey = z.string().min(1, 'every entry must cite its source (a key of `sources`)');

const sourcesTable = z.record(
  z.string().min(1),
  z
    .object({
      citation: nonEmpty,
      url: z.string().optional(),
      note: z.string().optional(),
    })
    .strict(),
);

const codedEntry = {
  system: nonEmpty,
  code: nonEmpty,
  display: z.string().optional(),
  source: sourceKey,
};

/** Systemic corticosteroids: ingredient codes and the product codes EHRs actually send. */
export const SteroidValueSetSchema = z
  .object({
    id: z.literal('systemic-corticosteroids'),
    title: nonEmpty,
    description: z.string().optional(),
    sources: sourcesTable,
    concepts: z
      .array(
        z
          .object({
            ...codedEntry,
            /** RxNorm term type: IN ingredient, SCD/SBD clinical/branded drug, GPCK/BPCK packs. */
            tty: z.enum(['IN', 'SCD', 'SBD', 'SCDF', 'SBDF', 'GPCK', 'BPCK']),
            ingredient: z.enum(STEROID_INGREDIENTS),
            doseForm: z.string().optional(),
            /** False for forms that act locally (cream, inhaler, eye drops, rectal foam...). */
            systemic: z.boolean(),
          })
          .strict(),
      )
      .min(1),
    /** Brand names recognised in text, besides the ingredient names themselves. */
    names: z
      .array(
        z
          .object({ text: nonEmpty, ingredient: z.enum(STEROID_INGREDIENTS), source: sourceKey })
          .strict(),
      )
      .default([]),
  })
  .strict();
export type SteroidValueSet = z.infer<typeof SteroidValueSetSchema>;

/** Words and route codes that mark a medication as acting locally (not systemic). */
export const NonSystemicValueSetSchema = z
  .object({
    id: z.literal('non-systemic-forms'),
    title: nonEmpty,
    description: z.string().optional(),
    sources: sourcesTable,
    /** Matched case-insensitively as whole words (or word starts ending in `*`) in text. */
    words: z.array(z.object({ word: nonEmpty, source: sourceKey }).strict()).min(1),
    routes: z.array(z.object({ ...codedEntry, systemic: z.boolean() }).strict()).min(1),
    /** Dose form codes (Medication.form: SNOMED CT, EDQM), judged by code without display. */
    forms: z.array(z.object({ ...codedEntry, systemic: z.boolean() }).strict()).default([]),
    /** Whole route texts (abbreviations such as PR, OU) that mean a local route. */
    routeTexts: z.array(z.object({ text: nonEmpty, source: sourceKey }).strict()).default([]),
    /** Brand names of local corticosteroid products (Pred Forte...), matched as whole words. */
    brands: z.array(z.object({ text: nonEmpty, source: sourceKey }).strict()).default([]),
    /**
     * A strength written as a percentage (`1 %`) marks a local form, except the strength of a
     * diluent named next to it (`sodium chloride 0.9 %`, `0.9% NaCl`).
     */
    percentStrength: z
      .object({
        source: sourceKey,
        diluents: z.array(z.object({ text: nonEmpty, source: sourceKey }).strict()).default([]),
      })
      .strict()
      .optional(),
  })
  .strict();
export type NonSystemicValueSet = z.infer<typeof NonSystemicValueSetSchema>;

const pgaCategory = z.enum(PGA_CATEGORIES);

export const PgaAnswerSchema = z.union([
  z
    .object({
      system: nonEmpty,
      code: nonEmpty,
      display: z.string().optional(),
      category: pgaCategory,
      source: z.string().optional(),
    })
    .strict(),
  z.object({ text: nonEmpty, category: pgaCategory, source: z.string().optional() }).strict(),
  // A score sent as a number (valueInteger, or valueQuantity without a unit).
  z.object({ value: z.number(), category: pgaCategory, source: z.string().optional() }).strict(),
]);
export type PgaAnswer = z.infer<typeof PgaAnswerSchema>;

export const PgaQuestionSchema = z
  .object({
    system: nonEmpty,
    code: nonEmpty,
    display: z.string().optional(),
    source: z.string().optional(),
  })
  .strict();
export type PgaQuestion = z.infer<typeof PgaQuestionSchema>;

/** PGA: local question codes (per centre), coded answers and text synonyms per category. */
export const PgaValueSetSchema = z
  .object({
    id: z.literal('pga'),
    title: nonEmpty,
    description: z.string().optional(),
    sources: sourcesTable,
    questions: z.array(PgaQuestionSchema),
    answers: z.array(PgaAnswerSchema),
    synonyms: z
      .object({
        quiescent: z.array(nonEmpty).min(1),
        mild: z.array(nonEmpty).min(1),
        moderate: z.array(nonEmpty).min(1),
        severe: z.array(nonEmpty).min(1),
      })
      .strict(),
    synonymsSource: sourceKey,
  })
  .strict();
export type PgaValueSet = z.infer<typeof PgaValueSetSchema>;

export const VITAL_FIELDS = ['height', 'weight', 'bmi'] as const;
export type VitalField = (typeof VITAL_FIELDS)[number];

export const VitalsValueSetSchema = z
  .object({
    id: z.literal('vitals'),
    title: nonEmpty,
    description: z.string().optional(),
    sources: sourcesTable,
    concepts: z.array(z.object({ ...codedEntry, field: z.enum(VITAL_FIELDS) }).strict()).min(1),
  })
  .strict();
export type VitalsValueSet = z.infer<typeof VitalsValueSetSchema>;

const diagnosis = z.enum(DIAGNOSES);

export const DiagnosisValueSetSchema = z
  .object({
    id: z.literal('ibd-diagnoses'),
    title: nonEmpty,
    description: z.string().optional(),
    sources: sourcesTable,
    concepts: z.array(z.object({ ...codedEntry, diagnosis }).strict()),
    /**
     * Code prefixes, e.g. ICD-10-CM `K50` matches K50, K50.0, K50.012 (dot optional); the
     * longest match wins. `diagnosis: null` marks a longer prefix that decides nothing (ICD-10-CM
     * K51.4 inflammatory polyps, under K51 but seen in Crohn's too): its codes count as no
     * diagnosis, and the Condition's other codings are looked at.
     */
    prefixes: z.array(
      z
        .object({
          system: nonEmpty,
          prefix: nonEmpty,
          diagnosis: diagnosis.nullable(),
          display: z.string().optional(),
          source: sourceKey,
        })
        .strict(),
    ),
  })
  .strict();
export type DiagnosisValueSet = z.infer<typeof DiagnosisValueSetSchema>;

/** How an observation may link to a visit, and how far a window reaches. */
export const LinkRuleSchema = z
  .object({
    encounterReference: z.boolean().default(true),
    sameDay: z.boolean().default(true),
    /** 0 turns the window off (same day only). */
    windowDays: z.number().int().min(0).max(365).default(0),
  })
  .strict();
export type LinkRule = z.infer<typeof LinkRuleSchema>;

const winner = z.enum(['strongest-closest-latest', 'strongest-latest']);

const vitalFieldSpec = z
  .object({
    unit: z.enum(['cm', 'kg', 'kg/m2']),
    link: LinkRuleSchema.prefault({}),
    winner: winner.default('strongest-closest-latest'),
    plausible: z.object({ min: z.number(), max: z.number() }).strict(),
    decimals: z.number().int().min(0).max(4).default(1),
    /** Linked candidates differing by more than this percentage raise `conflicting-values`. */
    conflictTolerancePercent: z.number().min(0).max(100).default(1),
    /** Report `missing-value` when a visit has no value for this field. */
    reportMissing: z.boolean().default(true),
  })
  .strict();
export type VitalFieldSpec = z.infer<typeof vitalFieldSpec>;

const includeCoding = z
  .object({ system: nonEmpty, code: nonEmpty, display: z.string().optional() })
  .strict();
const includeReference = (type: string) =>
  z
    .string()
    .regex(
      new RegExp(`^${type}/[A-Za-z0-9\\-.]{1,64}$`),
      `expected a reference ${type}/<id> (the id the EHR gives the ${type})`,
    );

/**
 * A rule that makes an encounter of a visit class a registry visit (e.g. the GI clinic):
 * its Encounter.type or serviceType coding, its serviceProvider (Organization) or one of its
 * locations (Location). A rule names exactly one; an encounter matching any rule is a visit.
 */
export const VisitIncludeRuleSchema = z
  .object({
    type: includeCoding.optional(),
    serviceType: includeCoding.optional(),
    serviceProvider: includeReference('Organization').optional(),
    location: includeReference('Location').optional(),
    /** What the rule stands for (e.g. "GI clinic"), for people reading the file. */
    note: z.string().optional(),
  })
  .strict()
  .refine(
    (r) =>
      Number(r.type !== undefined) +
        Number(r.serviceType !== undefined) +
        Number(r.serviceProvider !== undefined) +
        Number(r.location !== undefined) ===
      1,
    'a visit include rule names exactly one of type, serviceType, serviceProvider, location',
  );
export type VisitIncludeRule = z.infer<typeof VisitIncludeRuleSchema>;

export const AssemblySpecSchema = z
  .object({
    schema: z.literal('lhn-bridge/assembly/v1'),
    name: nonEmpty,
    description: z.string().optional(),
    /** View file names (without .json) used for each input. */
    views: z
      .object({
        patient: nonEmpty,
        encounter: nonEmpty,
        observation: nonEmpty,
        medicationStatement: nonEmpty,
        medicationRequest: nonEmpty,
        medication: nonEmpty,
        condition: nonEmpty,
      })
      .strict(),
    visits: z
      .object({
        classes: z
          .array(z.object({ system: nonEmpty, code: nonEmpty, type: nonEmpty }).strict())
          .min(1),
        statuses: z.array(nonEmpty).min(1),
        retractStatuses: z.array(nonEmpty).default(['entered-in-error']),
        /**
         * When not empty, an encounter of a visit class and status is a visit only if one rule
         * matches it (empty: every such encounter is a visit).
         */
        include: z.array(VisitIncludeRuleSchema).default([]),
      })
      .strict(),
    observations: z
      .object({
        statuses: z.array(nonEmpty).min(1),
        /** Not counting yet (an unsigned note): a PGA in one is named when no PGA counts. */
        pendingStatuses: z.array(nonEmpty).default(['registered', 'preliminary', 'unknown']),
      })
      .strict(),
    fields: z
      .object({
        pga: z
          .object({
            link: LinkRuleSchema.prefault({}),
            winner: winner.default('strongest-closest-latest'),
          })
          .strict(),
        height: vitalFieldSpec,
        weight: vitalFieldSpec,
        bmi: vitalFieldSpec,
        steroidUse: z
          .object({
            statementStatuses: z.array(nonEmpty).min(1),
            /** Statuses whose course counts only when it ends on or after the visit date. */
            statementStatusesIfEndedAfterVisit: z.array(nonEmpty).default(['stopped']),
            requestStatuses: z.array(nonEmpty).min(1),
            /** Request statuses whose course counts only when it ends on or after the visit date. */
            requestStatusesIfEndedAfterVisit: z.array(nonEmpty).default(['stopped']),
            requestIntents: z.array(nonEmpty).min(1),
          })
          .strict(),
        diagnosis: z
          .object({
            excludeVerificationStatuses: z
              .array(nonEmpty)
              .default(['entered-in-error', 'refuted', 'differential']),
            /** Conditions in one of these outrank the others before dates are compared. */
            preferVerificationStatuses: z.array(nonEmpty).default(['confirmed']),
          })
          .strict(),
      })
      .strict(),
    derivations: z
      .object({
        remission: z
          .object({ from: z.literal('pga'), whenCategories: z.array(pgaCategory).min(1) })
          .strict(),
      })
      .strict(),
    units: z
      .object({
        /** Non-UCUM unit strings EHRs send, mapped to their UCUM code. */
        synonyms: z.record(z.string().min(1), z.string().min(1)),
        source: nonEmpty,
      })
      .strict(),
    settings: z
      .object({
        budesonideCountsAsSteroid: z.boolean().default(false),
        /** Whether a one-administration order or statement (timing.repeat.count 1) counts. */
        singleAdministrationCountsAsSteroid: z.boolean().default(false),
        birthDatePrecision: z.enum(['day', 'month']).default('day'),
      })
      .strict()
      .prefault({}),
  })
  .strict();
export type AssemblySpec = z.infer<typeof AssemblySpecSchema>;
export type PackSettings = AssemblySpec['settings'];

/** The value sets of a pack, one per file in `valuesets/`. */
export interface PackValueSets {
  steroids: SteroidValueSet;
  nonSystemic: NonSystemicValueSet;
  pga: PgaValueSet;
  vitals: VitalsValueSet;
  diagnoses: DiagnosisValueSet;
}

export const VIEW_ROLES = [
  'patient',
  'encounter',
  'observation',
  'medicationStatement',
  'medicationRequest',
  'medication',
  'condition',
] as const;
export type ViewRole = (typeof VIEW_ROLES)[number];

/** A loaded, validated mapping pack: compiled views, value sets and the assembly spec. */
export interface MappingPack {
  name: string;
  views: Record<ViewRole, CompiledView>;
  valueSets: PackValueSets;
  assembly: AssemblySpec;
}
