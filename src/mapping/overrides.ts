// Centre overrides: a centre file adds its local codes (PGA flowsheet rows, local drug and
// diagnosis codes) and adjusts link windows and settings without editing the pack. Parsed
// with the same strictness as the pack, so a typo fails at load time with its path.
import { z } from 'zod';
import { DIAGNOSES, STEROID_INGREDIENTS } from '../registry/submission.js';
import {
  LinkRuleSchema,
  PgaAnswerSchema,
  PgaQuestionSchema,
  VITAL_FIELDS,
  VisitIncludeRuleSchema,
  type LinkRule,
  type MappingPack,
} from './pack-schema.js';

const nonEmpty = z.string().min(1);
// Each key without its pack default: a centre setting one key (encounterReference: false)
// keeps the pack's other keys (weight's 7-day window), not the schema defaults.
const linkOverride = z
  .object({
    encounterReference: LinkRuleSchema.shape.encounterReference.removeDefault().optional(),
    sameDay: LinkRuleSchema.shape.sameDay.removeDefault().optional(),
    windowDays: LinkRuleSchema.shape.windowDays.removeDefault().optional(),
  })
  .strict();

export const CentreOverridesSchema = z
  .object({
    valueSets: z
      .object({
        pga: z
          .object({
            questions: z.array(PgaQuestionSchema).default([]),
            answers: z.array(PgaAnswerSchema).default([]),
          })
          .strict()
          .optional(),
        'systemic-corticosteroids': z
          .object({
            include: z.array(
              z
                .object({
                  system: nonEmpty,
                  code: nonEmpty,
                  display: z.string().optional(),
                  ingredient: z.enum(STEROID_INGREDIENTS),
                  systemic: z.boolean(),
                  doseForm: z.string().optional(),
                })
                .strict(),
            ),
          })
          .strict()
          .optional(),
        'ibd-diagnoses': z
          .object({
            include: z.array(
              z
                .object({
                  system: nonEmpty,
                  code: nonEmpty,
                  display: z.string().optional(),
                  diagnosis: z.enum(DIAGNOSES),
                })
                .strict(),
            ),
          })
          .strict()
          .optional(),
        vitals: z
          .object({
            include: z.array(
              z
                .object({
                  system: nonEmpty,
                  code: nonEmpty,
                  display: z.string().optional(),
                  field: z.enum(VITAL_FIELDS),
                })
                .strict(),
            ),
          })
          .strict()
          .optional(),
      })
      .strict()
      .default({}),
    /**
     * Encounter classes that are visits at this centre, on top of the pack's (an EHR with a
     * local class system, e.g. Epic's urn:oid:1.2.840.114350... codes).
     */
    visits: z
      .object({
        classes: z
          .array(z.object({ system: nonEmpty, code: nonEmpty, type: nonEmpty }).strict())
          .default([]),
        /**
         * Which encounters of a visit class are registry visits at this centre (the GI clinic
         * by type, service type, location or service provider), added to the pack's rules.
         */
        include: z.array(VisitIncludeRuleSchema).default([]),
      })
      .strict()
      .optional(),
    links: z
      .object({
        pga: linkOverride.optional(),
        height: linkOverride.optional(),
        weight: linkOverride.optional(),
        bmi: linkOverride.optional(),
      })
      .strict()
      .default({}),
    settings: z
      .object({
        budesonideCountsAsSteroid: z.boolean().optional(),
        singleAdministrationCountsAsSteroid: z.boolean().optional(),
        birthDatePrecision: z.enum(['day', 'month']).optional(),
      })
      .strict()
      .default({}),
  })
  .strict();
export type CentreOverrides = z.infer<typeof CentreOverridesSchema>;

/** A centre override problem: where it is and what was expected. */
export class OverridesError extends Error {
  constructor(
    readonly source: string,
    readonly issues: { path: string; message: string }[],
  ) {
    super(
      `${source}: invalid mapping overrides\n` +
        issues
          .map((i) => `  - mapping.overrides${i.path ? `.${i.path}` : ''}: ${i.message}`)
          .join('\n'),
    );
    this.name = 'OverridesError';
  }
}

/** Validates `centre.mapping.overrides`; `source` names the centre file in errors. */
export function parseCentreOverrides(overrides: unknown, source: string): CentreOverrides {
  const result = CentreOverridesSchema.safeParse(overrides ?? {});
  if (!result.success) {
    throw new OverridesError(
      source,
      result.error.issues.map((issue) => ({
        path: issue.path
          .map((p) => (typeof p === 'number' ? `[${p}]` : String(p)))
          .join('.')
          .replace(/\.\[/g, '['),
        message: issue.message,
      })),
    );
  }
  return result.data;
}

const CENTRE_SOURCE = 'centre-override';
const CENTRE_CITATION = {
  citation: 'Added by the centre file (mapping.overrides); the centre vouches for these codes.',
};

function mergeLink(base: LinkRule, override: Partial<LinkRule> | undefined): LinkRule {
  return override ? { ...base, ...override } : base;
}

/** Returns a new pack with the centre's codes, link rules and settings layered on top. */
export function applyCentreOverrides(pack: MappingPack, overrides: CentreOverrides): MappingPack {
  const { valueSets: vs, links, settings, visits } = overrides;
  const valueSets = { ...pack.valueSets };
  if (vs.pga) {
    valueSets.pga = {
      ...valueSets.pga,
      questions: [...valueSets.pga.questions, ...vs.pga.questions],
      answers: [...valueSets.pga.answers, ...vs.pga.answers],
    };
  }
  const steroids = vs['systemic-corticosteroids'];
  if (steroids) {
    valueSets.steroids = {
      ...valueSets.steroids,
      sources: { ...valueSets.steroids.sources, [CENTRE_SOURCE]: CENTRE_CITATION },
      concepts: [
        ...valueSets.steroids.concepts,
        ...steroids.include.map((c) => ({ ...c, tty: 'SCD' as const, source: CENTRE_SOURCE })),
      ],
    };
  }
  const dx = vs['ibd-diagnoses'];
  if (dx) {
    valueSets.diagnoses = {
      ...valueSets.diagnoses,
      sources: { ...valueSets.diagnoses.sources, [CENTRE_SOURCE]: CENTRE_CITATION },
      concepts: [
        ...valueSets.diagnoses.concepts,
        ...dx.include.map((c) => ({ ...c, source: CENTRE_SOURCE })),
      ],
    };
  }
  if (vs.vitals) {
    valueSets.vitals = {
      ...valueSets.vitals,
      sources: { ...valueSets.vitals.sources, [CENTRE_SOURCE]: CENTRE_CITATION },
      concepts: [
        ...valueSets.vitals.concepts,
        ...vs.vitals.include.map((c) => ({ ...c, source: CENTRE_SOURCE })),
      ],
    };
  }
  const fields = pack.assembly.fields;
  const assembly = {
    ...pack.assembly,
    visits: visits
      ? {
          ...pack.assembly.visits,
          classes: [...pack.assembly.visits.classes, ...visits.classes],
          include: [...pack.assembly.visits.include, ...visits.include],
        }
      : pack.assembly.visits,
    fields: {
      ...fields,
      pga: { ...fields.pga, link: mergeLink(fields.pga.link, links.pga) },
      height: { ...fields.height, link: mergeLink(fields.height.link, links.height) },
      weight: { ...fields.weight, link: mergeLink(fields.weight.link, links.weight) },
      bmi: { ...fields.bmi, link: mergeLink(fields.bmi.link, links.bmi) },
    },
    settings: {
      ...pack.assembly.settings,
      ...Object.fromEntries(Object.entries(settings).filter(([, v]) => v !== undefined)),
    },
  };
  return { ...pack, valueSets, assembly };
}
