// docs/registry-submission.md's example is what a registry engineer tests their own
// canonical JSON, SHA-256 and HMAC code against: it must be a real submission (a golden
// case's output, so it follows the mapping), valid against the schema, and every key and
// hash in it must be recomputable from what the doc gives (the secret, centre and ids).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { GOLDEN_CENTRE_ID, GOLDEN_SECRET } from '../../fixtures/golden/run-golden.js';
import { canonicalJson, pseudonymKey, sha256Hex, submissionId } from '../../src/registry/keys.js';
import { RegistrySubmissionSchema } from '../../src/registry/submission.js';

const doc = readFileSync(new URL('../../docs/registry-submission.md', import.meta.url), 'utf8');
const section = /## Example\n([\s\S]*?)(?=\n## |$)/.exec(doc)?.[1] ?? '';
const json = /```json\n([\s\S]*?)\n```/.exec(section)?.[1] ?? '';

describe('docs/registry-submission.md, the example', () => {
  it('when the example is read, then it is the output of the golden case it names, and valid', () => {
    const named = /fixtures\/golden\/([a-z0-9-]+)/.exec(section)?.[1];
    expect(named).toBeDefined();
    const golden = readFileSync(
      new URL(`../../fixtures/golden/${named}/expected.ndjson`, import.meta.url),
      'utf8',
    ).split('\n')[0]!;
    const example = JSON.parse(json) as unknown;
    expect(example).toEqual(JSON.parse(golden));
    expect(RegistrySubmissionSchema.safeParse(example).success).toBe(true);
  });

  it('when a registry recomputes its keys and hashes with the secret and ids the doc gives, then they match', () => {
    const example = JSON.parse(json) as Record<string, unknown>;
    expect(section).toContain(GOLDEN_SECRET);
    expect(section).toContain(GOLDEN_CENTRE_ID);
    const patientId = /Patient `([^`]+)`/.exec(section)?.[1];
    const encounterId = /Encounter `([^`]+)`/.exec(section)?.[1];
    expect(example.patientKey).toBe(
      pseudonymKey(GOLDEN_SECRET, GOLDEN_CENTRE_ID, 'Patient', patientId!),
    );
    expect(example.visitKey).toBe(
      pseudonymKey(GOLDEN_SECRET, GOLDEN_CENTRE_ID, 'Encounter', encounterId!),
    );
    const { submissionId: id, contentHash, ...rest } = example;
    const hash = sha256Hex(canonicalJson(rest));
    expect(contentHash).toBe(hash);
    expect(id).toBe(submissionId(example.visitKey as string, hash));
  });
});
