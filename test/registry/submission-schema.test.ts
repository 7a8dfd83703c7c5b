// The published JSON Schema must be exactly what the zod contract generates (it is the
// registry's documentation), and must accept real submissions and reject identifiers.
import { readFileSync } from 'node:fs';
import { format, resolveConfig } from 'prettier';
import { describe, expect, it } from 'vitest';
import { buildRetraction } from '../../src/registry/retraction.js';
import {
  buildSubmissionJsonSchema,
  renderSubmissionJsonSchema,
  SUBMISSION_JSON_SCHEMA_PATH,
} from '../../src/registry/json-schema.js';
import { contentHash, pseudonymKey } from '../../src/registry/keys.js';
import { RegistrySubmissionSchema } from '../../src/registry/submission.js';

const root = new URL('../../', import.meta.url);
const SECRET = 'submission-schema-test-secret-0123456789';

describe('registry submission JSON Schema', () => {
  it('when the schema is generated from zod, then it equals the committed docs file (else run scripts/update-golden.ts --schema)', async () => {
    const committed = readFileSync(new URL(SUBMISSION_JSON_SCHEMA_PATH, root), 'utf8');
    const file = new URL(SUBMISSION_JSON_SCHEMA_PATH, root).pathname;
    const config = (await resolveConfig(file)) ?? {};
    const generated = await format(renderSubmissionJsonSchema(), { ...config, parser: 'json' });
    expect(committed).toBe(generated);
  });

  it('when the schema is inspected, then both kinds are strict and no field can carry a name or MRN', () => {
    const schema = buildSubmissionJsonSchema() as { oneOf: Record<string, any>[] };
    expect(schema.oneOf).toHaveLength(2);
    const text = JSON.stringify(schema);
    for (const banned of ['"name"', '"mrn"', '"address"', '"identifier"', '"telecom"']) {
      expect(text).not.toContain(banned);
    }
    for (const branch of schema.oneOf) expect(branch.additionalProperties).toBe(false);
  });
});

describe('buildRetraction', () => {
  const options = {
    centreId: 'centre-a',
    pseudonymSecret: SECRET,
    patientId: 'p1',
    encounterId: 'e1',
    reason: 'entered-in-error' as const,
    provenance: [{ resourceType: 'Encounter', id: 'e1', versionId: '3' }],
  };

  it('when a retraction is built, then it carries the visit keys, is schema-valid and deterministic', () => {
    const r = buildRetraction(options);
    expect(RegistrySubmissionSchema.parse(r)).toEqual(r);
    expect(r.visitKey).toBe(pseudonymKey(SECRET, 'centre-a', 'Encounter', 'e1'));
    expect(r.patientKey).toBe(pseudonymKey(SECRET, 'centre-a', 'Patient', 'p1'));
    expect(buildRetraction(options)).toEqual(r);
    const { submissionId, contentHash: hash, ...content } = r;
    expect(hash).toBe(contentHash(content));
    expect(submissionId).toBe(`${r.visitKey.slice(0, 32)}-${hash.slice(0, 16)}`);
    expect(JSON.stringify(r)).not.toContain('"p1"');
  });

  it('when the reason or the source version differs, then the retraction id differs', () => {
    const a = buildRetraction(options);
    const b = buildRetraction({ ...options, reason: 'deleted' });
    const c = buildRetraction({
      ...options,
      provenance: [{ resourceType: 'Encounter', id: 'e1', versionId: '4' }],
    });
    expect(new Set([a.submissionId, b.submissionId, c.submissionId]).size).toBe(3);
  });
});
