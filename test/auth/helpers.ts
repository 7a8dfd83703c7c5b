// Test helpers for auth and the sandbox EHR: temporary key folders, a sandbox EHR with a
// provisioned centre, a controllable clock, and a logger whose output can be searched.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../../src/util/logger.js';
import {
  startSandboxEhr,
  type SandboxEhr,
  type SandboxResource,
  type StartSandboxEhrOptions,
} from '../../src/sandbox/ehr/index.js';
import {
  provisionSandboxCentre,
  type ProvisionSandboxCentreOptions,
  type ProvisionedSandboxCentre,
} from '../../src/sandbox/ehr/provision.js';

/** A temporary folder, removed by the returned cleanup. */
export async function makeTempDir(
  prefix = 'lhn-auth-',
): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** A clock tests move by hand (epoch ms). */
export function createClock(start = Date.now()) {
  let t = start;
  return {
    now: () => t,
    advance(ms: number) {
      t += ms;
    },
  };
}

/** A debug logger writing into memory. */
export function createCapturingLogger(): { logger: Logger; text: () => string } {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, callback) {
      lines.push(chunk.toString());
      callback();
    },
  });
  return { logger: createLogger({ level: 'debug', destination }), text: () => lines.join('') };
}

export interface SandboxFixture extends ProvisionedSandboxCentre {
  ehr: SandboxEhr;
  keysDir: string;
  close: () => Promise<void>;
}

/** Starts a sandbox EHR and provisions one centre on it. */
export async function startSandboxWithCentre(
  options: {
    ehr?: StartSandboxEhrOptions;
    centre?: Omit<ProvisionSandboxCentreOptions, 'keysDir'>;
    resources?: SandboxResource[];
  } = {},
): Promise<SandboxFixture> {
  const temp = await makeTempDir();
  const ehr = await startSandboxEhr({ resources: options.resources ?? [], ...options.ehr });
  const provisioned = await provisionSandboxCentre(ehr, { keysDir: temp.dir, ...options.centre });
  return {
    ...provisioned,
    ehr,
    keysDir: temp.dir,
    close: async () => {
      await ehr.close();
      await temp.cleanup();
    },
  };
}
