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
import {
  RegistrySubmissionSchema,
  RetractionSchema,
  type SourceRef,
} from '../../src/registry/submission.js';

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

  it('when built from valid and invalid provenance, then it is exactly what the schema parse returns, or the parse error', () => {
    const refs: unknown[] = [
      { resourceType: 'Encounter', id: 'e1' },
      { id: 'e1', lastUpdated: '2024-03-05T10:00:00Z', resourceType: 'Encounter', versionId: '7' },
      { versionId: '2', id: 'e-é😀', resourceType: 'Encounter' },
      { lastUpdated: '', resourceType: 'Encounter', id: 'x'.repeat(64) },
      { resourceType: 'Encounter', id: 'x'.repeat(65) },
      { resourceType: 'Encounter', id: '' },
      { resourceType: 'encounter', id: 'e1' },
      { resourceType: 'Encounter', id: 'e1', versionId: 'v'.repeat(65) },
      { resourceType: 'Encounter', id: 'e1', versionId: undefined },
      { resourceType: 'Encounter', id: 'e1', lastUpdated: 5 },
      { resourceType: 'Encounter', id: 'e1', extra: 'no' },
    ];
    const cases = [
      ...refs.map((r) => ({ ...options, provenance: [r as SourceRef] })),
      { ...options, provenance: [] },
      { ...options, provenance: [refs[1], refs[0], refs[2]] as SourceRef[] },
      { ...options, centreId: '' },
      { ...options, reason: 'withdrawn' as 'deleted' },
    ];
    const byTypeIdVersion = (a: SourceRef, b: SourceRef): number => {
      if (a.resourceType !== b.resourceType) return a.resourceType < b.resourceType ? -1 : 1;
      if (a.id !== b.id) return a.id < b.id ? -1 : 1;
      return (a.versionId ?? '') < (b.versionId ?? '') ? -1 : 1;
    };
    for (const c of cases) {
      // What buildRetraction made before it skipped the schema parse for valid input.
      let expected: string;
      try {
        const content = {
          schema: 'lhn-bridge/registry-submission/v1' as const,
          kind: 'retraction' as const,
          centreId: c.centreId,
          patientKey: pseudonymKey(SECRET, c.centreId, 'Patient', c.patientId),
          visitKey: pseudonymKey(SECRET, c.centreId, 'Encounter', c.encounterId),
          reason: c.reason,
          provenance: [...c.provenance].sort(byTypeIdVersion),
        };
        const hash = contentHash(content);
        expected = JSON.stringify(
          RetractionSchema.parse({
            ...content,
            submissionId: `${content.visitKey.slice(0, 32)}-${hash.slice(0, 16)}`,
            contentHash: hash,
          }),
        );
      } catch (error) {
        expected = `error ${String(error)}`;
      }
      let actual: string;
      try {
        actual = JSON.stringify(buildRetraction(c));
      } catch (error) {
        actual = `error ${String(error)}`;
      }
      expect(actual).toBe(expected);
    }
  });
});
