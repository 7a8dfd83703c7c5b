// The CLI as an operator runs it (node bin/lhn-bridge.js ...) with bad input: a non-zero exit
// code and one message naming the folder or file and what to do, never a stack trace or an
// "unexpected error" with a raw errno.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));
const bin = join(root, 'bin', 'lhn-bridge.js');
const SECRET = 'cli-bad-input-test-secret-0123456789abcdef';
const work = mkdtempSync(join(tmpdir(), 'lhn-cli-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env))
    if (v !== undefined && !k.startsWith('LHN_')) env[k] = v;
  env.LHN_PSEUDONYM_SECRET = SECRET;
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { cwd: root, env }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

function expectCleanError(r: { code: number; stderr: string }, message: RegExp): void {
  expect(r.code).not.toBe(0);
  expect(r.stderr).toMatch(message);
  expect(r.stderr).not.toMatch(/unexpected error|\n\s+at /);
}

describe('keys with a file where the keys folder should be', () => {
  const file = join(work, 'not-a-folder');
  writeFileSync(file, 'x');

  it.each([['generate', '--centre', 'centre-a'], ['list'], ['jwks']])(
    'when keys %s is given a file as --keys-dir, then it says the folder is a file',
    async (...args) => {
      const r = await run(['keys', ...args, '--keys-dir', file]);
      expectCleanError(r, /keys folder .*not-a-folder .*a file is in the way; it must be a folder/);
    },
  );
});

describe('map with a folder', () => {
  const pack = ['--mapping', 'mappings/ibd'];

  it('when a folder holds NDJSON and a non-FHIR .json file, then the .json file is not skipped silently', async () => {
    const dir = join(work, 'mixed');
    mkdirSync(dir);
    writeFileSync(join(dir, 'a.ndjson'), '{"resourceType":"Patient","id":"p1"}\n');
    writeFileSync(join(dir, 'b.json'), '{"hello":"world"}');
    expectCleanError(await run(['map', ...pack, '--input', dir]), /b\.json: not a FHIR resource/);
  });

  it('when a folder holds NDJSON and a bulk export manifest, then the manifest is skipped with a note', async () => {
    const dir = mkdtempSync(join(work, 'manifest-'));
    writeFileSync(join(dir, 'Patient.ndjson'), '{"resourceType":"Patient","id":"p1"}\n');
    writeFileSync(
      join(dir, 'manifest.json'),
      JSON.stringify({ transactionTime: '2024-01-01T00:00:00Z', request: 'x', output: [] }),
    );
    const r = await run(['map', ...pack, '--input', dir]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/note: manifest\.json is a bulk export manifest, not data; skipped/);
    expect(r.stderr).toMatch(/mapped 1 resources/);
  });

  it('when a folder holds a Bundle .json, then its resources are mapped', async () => {
    const dir = join(work, 'bundle');
    mkdirSync(dir);
    writeFileSync(
      join(dir, 'b.json'),
      JSON.stringify({
        resourceType: 'Bundle',
        type: 'collection',
        entry: [{ resource: { resourceType: 'Patient', id: 'p1' } }],
      }),
    );
    const r = await run(['map', ...pack, '--input', dir]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/mapped 1 resources/);
  });

  it('when an .ndjson entry is a folder, then it says it cannot be read', async () => {
    const dir = join(work, 'subdir');
    mkdirSync(join(dir, 'x.ndjson'), { recursive: true });
    expectCleanError(
      await run(['map', ...pack, '--input', dir]),
      /x\.ndjson: cannot be read \(EISDIR\)/,
    );
  });

  it('when --mapping names no folder, then it says so (not six missing pack files)', async () => {
    const r = await run(['map', '--mapping', join(work, 'no-pack'), '--input', work]);
    expectCleanError(r, /--mapping .*no-pack: no such folder/);
    expect(r.stderr).not.toMatch(/assembly\.yaml/);
  });
});

describe('map with malformed JSON (security review finding 5)', () => {
  const pack = ['--mapping', 'mappings/ibd'];

  it('when a .json input is malformed next to a name, then the error gives line and column and does not quote the input', async () => {
    const path = join(work, 'bundle.json');
    writeFileSync(
      path,
      '{"resourceType":"Bundle","entry":[\n  {"family":Smithson,"given":"Alice"}]}',
    );
    const r = await run(['map', ...pack, '--input', path]);
    expectCleanError(r, /bundle\.json: not valid JSON at line 2, column 13 \(unexpected character/);
    expect(r.stderr).not.toMatch(/Smithson|Alice/);
  });

  it('when an NDJSON line is malformed, then the error gives line and column without quoting it', async () => {
    const path = join(work, 'patients.ndjson');
    writeFileSync(
      path,
      '{"resourceType":"Patient","id":"p1"}\n{"resourceType":"Patient","name":Smithson}\n',
    );
    const r = await run(['map', ...pack, '--input', path]);
    expectCleanError(r, /patients\.ndjson line 2: not valid JSON at column 34/);
    expect(r.stderr).not.toMatch(/Smithson/);
  });

  it('when the input file does not exist, then it says so rather than calling it unreadable JSON', async () => {
    const r = await run(['map', ...pack, '--input', join(work, 'missing.json')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).not.toMatch(/not valid JSON|\n\s+at /);
  });
});
