// What the tests that spawn the `lhn-bridge` CLI share: the bin, an environment without the
// developer's own LHN_* settings, a temporary centres folder with one minimal centre file
// (removed after the file's tests), and a free loopback port.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll } from 'vitest';

/** The checkout's root folder, the working directory of every spawned CLI. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The CLI entry, run as `node <CLI_BIN> ...`. */
export const CLI_BIN = join(ROOT, 'bin', 'lhn-bridge.js');

/** This process's environment without LHN_* and REDIS_URL, plus `extra`. */
export function cliEnv(extra: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env))
    if (v !== undefined && !k.startsWith('LHN_') && k !== 'REDIS_URL') env[k] = v;
  return Object.assign(env, extra);
}

/**
 * A temporary centres folder holding one minimal centre file `<id>.json` (an EHR address
 * that is never called), removed after the calling test file's tests.
 */
export function centresDirWith(id: string, name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `lhn-${id}-`));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(
    join(dir, `${id}.json`),
    JSON.stringify({
      id,
      name,
      fhir: { baseUrl: 'https://ehr.example.org/fhir/R4' },
      auth: { clientId: 'abc', privateKeyFile: 'keys/a.json', kid: 'k1' },
      cohort: { group: 'ibd-cohort' },
    }),
  );
  return dir;
}

/** A loopback port free at the time of asking. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}
