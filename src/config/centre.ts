// The centre file: everything lhn-bridge needs to know about one centre's EHR, in one
// zod schema. Parsed once at start; a bad file fails with every problem and its path.
import { readdirSync } from 'node:fs';
import { dirname, extname, isAbsolute, join, resolve } from 'node:path';
import { CronExpressionParser } from 'cron-parser';
import { parse as parseYaml } from 'yaml';
import { describeIoError, describeJsonError, describeYamlError, isIoError } from './parse-error.js';
import { z } from 'zod';
import { ConfigError, issuesFromZod, type ConfigIssue } from './errors.js';
import { readTextFile } from './text.js';

/** True for hosts that never leave the machine (http is allowed only for these). */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h);
}

/**
 * An absolute URL that is https, or http on a loopback host; `example` shows the expected
 * form in the message (never the value given, which may carry a secret in its path).
 */
export function secureUrlSchema(example = 'https://host.example.org/fhir/R4') {
  return z
    .url({
      protocol: /^https?$/,
      error: `expected an absolute URL with its scheme, e.g. ${example}`,
    })
    .refine(
      (value) => {
        // zod runs this refinement even when the value is not an http(s) URL (reported above).
        if (!URL.canParse(value)) return true;
        const url = new URL(value);
        // Another scheme (ftp:, javascript:) is already reported above.
        if (url.protocol !== 'http:') return true;
        return isLoopbackHost(url.hostname);
      },
      { message: 'must use https (http is allowed only for localhost / 127.0.0.1 / ::1)' },
    );
}

/** An absolute URL that is https, or http on a loopback host. */
export const secureUrl = secureUrlSchema();

/** The types pulled by search (Medication is read by reference instead). */
export const SEARCHED_TYPES = [
  'Patient',
  'Encounter',
  'Observation',
  'MedicationStatement',
  'MedicationRequest',
  'Condition',
] as const;

export type SearchedType = (typeof SEARCHED_TYPES)[number];

/** Search parameters lhn-bridge sets itself on every pull search. */
export const RESERVED_SEARCH_PARAMS = ['patient', 'subject', '_id', '_count', '_lastUpdated'];

/** One search's extra parameters, e.g. `{ category: vital-signs }` (values sent as given). */
const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_.-]*(:[A-Za-z0-9_.-]+)?$/;
const searchParamSet = z
  .record(z.string(), z.string().min(1, 'must not be empty'))
  .superRefine((set, ctx) => {
    const names = Object.keys(set);
    if (names.length === 0)
      ctx.addIssue({
        code: 'custom',
        message: 'needs at least one parameter (leave the type out to search it plainly)',
      });
    for (const name of names) {
      if (!PARAM_NAME.test(name))
        ctx.addIssue({
          code: 'custom',
          path: [name],
          message:
            'is not a search parameter name (letters, digits, _ . -, optionally :modifier, e.g. code:in)',
        });
      else if (RESERVED_SEARCH_PARAMS.includes(name.split(':')[0]!))
        ctx.addIssue({
          code: 'custom',
          path: [name],
          message: `is set by lhn-bridge itself (${RESERVED_SEARCH_PARAMS.join(', ')} are reserved)`,
        });
    }
  });

function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

/**
 * Why a schedule.cron would not run as meant, or undefined. Five fields (minute hour
 * day-of-month month day-of-week) or a macro such as @daily, parsed as the BullMQ job
 * scheduler parses it (cron-parser).
 */
export function cronProblem(cron: string): string | undefined {
  const example = 'e.g. "0 2 * * *" for 02:00 every night';
  const fields = cron.trim().split(/\s+/);
  if (!cron.trim().startsWith('@') && fields.length !== 5)
    return `expected 5 cron fields (minute hour day-of-month month day-of-week), got ${fields.length}: ${example}`;
  try {
    CronExpressionParser.parse(cron);
  } catch (err) {
    return `not a valid cron expression (${(err as Error).message}): ${example}`;
  }
  return undefined;
}

const hhmm = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'expected HH:MM (24-hour)');

/** The resource types a pull may fetch. */
export const PULL_RESOURCE_TYPES = [
  'Patient',
  'Encounter',
  'Observation',
  'MedicationStatement',
  'MedicationRequest',
  'Medication',
  'Condition',
] as const;
export type PullResourceType = (typeof PULL_RESOURCE_TYPES)[number];

/** SMART v2 scopes the IBD pack needs; v1 `.read` equivalents are accepted too. */
export const DEFAULT_SCOPES = [
  'system/Patient.rs',
  'system/Encounter.rs',
  'system/Observation.rs',
  'system/MedicationStatement.rs',
  'system/MedicationRequest.rs',
  'system/Medication.rs',
  'system/Condition.rs',
  'system/Group.rs',
];

const scope = z
  .string()
  .regex(
    /^(system|user|patient)\/(\*|[A-Z][A-Za-z]+)\.(read|write|\*|(?=[cruds])c?r?u?d?s?)(\?.*)?$/,
    'expected a SMART scope such as system/Observation.rs or system/Observation.read',
  );

export const CentreFileSchema = z
  .object({
    id: z
      .string()
      .regex(/^[a-z0-9][a-z0-9-]{1,62}$/, 'lower-case letters, digits and dashes, 2-63 characters'),
    name: z.string().min(1),
    /** IANA time zone of the centre: same-day linking and the sync schedule use it. */
    timeZone: z
      .string()
      .default('UTC')
      .refine(isTimeZone, {
        error: (issue) =>
          `unknown IANA time zone "${String(issue.input).slice(0, 60)}" (e.g. America/New_York, Europe/London, UTC)`,
      }),
    fhir: z
      .object({
        baseUrl: secureUrl,
        /** Overrides the token endpoint found by SMART discovery. */
        tokenUrl: secureUrl.optional(),
      })
      .strict(),
    auth: z
      .object({
        clientId: z.string().min(1),
        /** Private key: a JWK (.json) or PEM (.pem) file, relative to the centre file. */
        privateKeyFile: z.string().min(1),
        kid: z.string().min(1),
        alg: z.enum(['RS384', 'ES384']).default('ES384'),
        scopes: z.array(scope).min(1).default(DEFAULT_SCOPES),
        /** Optional jku header value (our JWKS URL), for EHRs that fetch keys by URL. */
        jku: secureUrl.optional(),
      })
      .strict(),
    cohort: z.union(
      [
        z.object({ group: z.string().min(1) }).strict(),
        z
          .object({
            /** File of patient identifiers, one `system|value` a line, relative to the centre file. */
            roster: z.string().min(1),
          })
          .strict(),
      ],
      { error: 'expected either group: <Group id> or roster: <file of system|value lines>' },
    ),
    pull: z
      .object({
        mode: z.enum(['search', 'bulk']).default('search'),
        pageSize: z.number().int().min(1).max(1000).default(200),
        resourceTypes: z
          .array(z.enum(PULL_RESOURCE_TYPES))
          .min(1)
          .default([...PULL_RESOURCE_TYPES]),
        /**
         * Search mode: extra parameters per resource type, one search per entry (results
         * merged, each resource once). For EHRs that refuse a bare `Observation?patient=`
         * (Epic wants a category or code) or to narrow a type to what the pack reads.
         */
        searches: z
          .partialRecord(z.enum(SEARCHED_TYPES), z.array(searchParamSet).min(1).max(20))
          .optional(),
        /** How far back the first (full) sync looks, in days. */
        firstSyncLookbackDays: z.number().int().min(1).max(36500).default(730),
        /** Bulk export polling gives up after this long. */
        bulkTimeoutMinutes: z
          .number()
          .int()
          .min(1)
          .max(7 * 24 * 60)
          .default(240),
        /**
         * Bulk mode with a roster: accept `Patient/$export`, which exports every patient of
         * the EHR (the roster is applied here, after the transfer). Off: such a centre file
         * is refused, since only the registry's patients should leave the EHR.
         */
        patientLevelExport: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
    schedule: z
      .object({
        /** Cron expression in the centre's time zone; absent means manual syncs only. */
        cron: z
          .string()
          .min(1)
          .superRefine((cron, ctx) => {
            const problem = cronProblem(cron);
            if (problem) ctx.addIssue({ code: 'custom', message: problem });
          })
          .optional(),
        mode: z.enum(['full', 'incremental']).default('incremental'),
        /**
         * An incremental run becomes full when the last full sync is older than this many
         * days. Incremental searches cannot see deletions (an Observation or medication
         * removed from the EHR); a full sync corrects the visits that used them.
         */
        fullEveryDays: z.number().int().min(1).max(365).optional(),
      })
      .strict()
      .prefault({}),
    limits: z
      .object({
        maxConcurrentRequests: z.number().int().min(1).max(64).default(4),
        requestsPerSecond: z.number().positive().max(1000).default(10),
        /** Requests happen only inside this daily window (centre time zone). */
        syncWindow: z.object({ start: hhmm, end: hhmm }).strict().optional(),
      })
      .strict()
      .prefault({}),
    mapping: z
      .object({
        pack: z.string().min(1).default('ibd'),
        /** Local codes and rule changes on top of the pack; validated by the pack loader. */
        overrides: z.record(z.string(), z.unknown()).default({}),
      })
      .strict()
      .prefault({}),
    alerts: z
      .object({
        staleAfterHours: z.number().positive().optional(),
        failuresInARow: z.number().int().min(1).optional(),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .superRefine(
    (centre, ctx) => {
      if (bulkWithRoster(centre) && centre.pull.patientLevelExport !== true)
        ctx.addIssue({
          code: 'custom',
          path: ['cohort'],
          message:
            'bulk mode with a roster would export every patient of the EHR (Patient/$export) and drop the others here; ask centre IT for a Group of the registry patients (cohort.group: Group/[id]/$export), or use pull.mode: search, or set pull.patientLevelExport: true to accept the whole-EHR export',
        });
    },
    // Run even when another setting is wrong (zod skips a refinement after an aborting issue,
    // e.g. auth.alg: RS256), so every problem is listed at once; the value may then be partly
    // unparsed, hence the shape check.
    { when: (payload) => bulkWithRoster(payload.value) },
  );

/** pull.mode bulk with a cohort.roster, on a value that may be partly unparsed. */
function bulkWithRoster(value: unknown): value is {
  pull: { mode: 'bulk'; patientLevelExport?: unknown };
  cohort: { roster: string };
} {
  const v = value as { pull?: { mode?: unknown }; cohort?: { roster?: unknown } } | undefined;
  return (
    typeof v === 'object' &&
    v !== null &&
    v.pull?.mode === 'bulk' &&
    typeof v.cohort === 'object' &&
    v.cohort !== null &&
    typeof v.cohort.roster === 'string'
  );
}

/** A parsed centre file, with file references resolved to absolute paths. */
export type CentreConfig = z.infer<typeof CentreFileSchema> & {
  /** Absolute path of the file this came from (for messages). */
  sourceFile: string;
};

/** Parses centre data already read from somewhere; `source` names it in errors. */
export function parseCentre(data: unknown, source: string): CentreConfig {
  const result = CentreFileSchema.safeParse(data);
  if (!result.success) throw new ConfigError(source, issuesFromZod(result.error, CentreFileSchema));
  const base = dirname(resolve(source));
  const abs = (p: string) => (isAbsolute(p) ? p : join(base, p));
  const centre = result.data;
  return {
    ...centre,
    auth: { ...centre.auth, privateKeyFile: abs(centre.auth.privateKeyFile) },
    cohort: 'roster' in centre.cohort ? { roster: abs(centre.cohort.roster) } : centre.cohort,
    sourceFile: resolve(source),
  };
}

/** Reads and validates one centre file (.yaml, .yml or .json). */
export async function loadCentreFile(path: string): Promise<CentreConfig> {
  let text: string;
  try {
    text = await readTextFile(path);
  } catch (err) {
    throw new ConfigError(path, [
      {
        path: '',
        message: `cannot read the centre file: ${isIoError(err) ? describeIoError(err) : 'read failed'}`,
      },
    ]);
  }
  let data: unknown;
  try {
    data = extname(path) === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    // Line, column and kind only: the parser's message quotes the file around the error.
    throw new ConfigError(path, [
      {
        path: '',
        message: extname(path) === '.json' ? describeJsonError(text) : describeYamlError(err),
      },
    ]);
  }
  return parseCentre(data, path);
}

export interface LoadCentresOptions {
  /**
   * More problems of a centre that parsed (its mapping pack and overrides),
   * reported with the files' other problems. Paths are inside the centre file.
   */
  check?: (centre: CentreConfig) => Promise<ConfigIssue[]>;
}

/** Loads every centre file in a folder; all files' problems are reported together. */
export async function loadCentres(
  dir: string,
  options: LoadCentresOptions = {},
): Promise<CentreConfig[]> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(dir, [
      {
        path: '',
        message:
          code === 'ENOENT'
            ? 'the centres folder does not exist (set LHN_CENTRES_DIR, or centresDir in LHN_CONFIG, to the folder of centre files)'
            : code === 'ENOTDIR'
              ? 'not a folder (LHN_CENTRES_DIR / centresDir must name the folder of centre files)'
              : `cannot read the centres folder (${code ?? (err as Error).message})`,
      },
    ]);
  }
  const files = names.filter((f) => /\.(ya?ml|json)$/.test(f)).sort();
  const centres: CentreConfig[] = [];
  const problems: ConfigError[] = [];
  for (const file of files) {
    try {
      centres.push(await loadCentreFile(join(dir, file)));
    } catch (err) {
      if (err instanceof ConfigError) problems.push(err);
      else throw err;
    }
  }
  const ids = new Map<string, string>();
  for (const c of centres) {
    const prev = ids.get(c.id);
    if (prev)
      problems.push(
        new ConfigError(c.sourceFile, [
          { path: 'id', message: `duplicate centre id, also used by ${prev}` },
        ]),
      );
    ids.set(c.id, c.sourceFile);
  }
  if (options.check)
    for (const c of centres) {
      const issues = await options.check(c);
      if (issues.length > 0) problems.push(new ConfigError(c.sourceFile, issues));
    }
  if (problems.length > 0) {
    throw new ConfigError(
      dir,
      problems.flatMap((p) =>
        p.issues.map((i) => ({
          path: `${p.source}${i.path ? ` ${i.path}` : ''}`,
          message: i.message,
        })),
      ),
    );
  }
  return centres;
}
