// The registry contract as JSON Schema, generated from the zod schema so the two can never
// drift: docs/registry-submission.v1.schema.json is this module's output (a test fails when
// the committed file is stale; `npx tsx scripts/update-golden.ts --schema` rewrites it).
import { z } from 'zod';
import { RegistrySubmissionSchema } from './submission.js';

/** Where the published schema lives, relative to the repository root. */
export const SUBMISSION_JSON_SCHEMA_PATH = 'docs/registry-submission.v1.schema.json';

/** The JSON Schema (draft 2020-12) of a registry submission (visit or retraction). */
export function buildSubmissionJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(RegistrySubmissionSchema, {
    target: 'draft-2020-12',
    io: 'output',
    reused: 'inline',
  }) as Record<string, unknown>;
  return {
    $schema: schema.$schema,
    $id: 'https://lhn-bridge.example/schemas/registry-submission.v1.schema.json',
    title: 'lhn-bridge registry submission, version 1',
    description:
      'One message to the registry: a pseudonymous visit (kind "visit", an upsert keyed by visitKey) or the retraction of an earlier visit (kind "retraction"). Unknown properties are not allowed. See docs/registry-submission.md.',
    ...Object.fromEntries(Object.entries(schema).filter(([k]) => k !== '$schema')),
  };
}

/** The schema as the committed file's text (2-space JSON, trailing newline). */
export function renderSubmissionJsonSchema(): string {
  return `${JSON.stringify(buildSubmissionJsonSchema(), null, 2)}\n`;
}
