// A private key file that group or others can read (security review finding 7): it is still
// used (Kubernetes secret volumes are 0644 unless defaultMode says otherwise), but loading it
// logs a warning once, and the onboarding check fails with the chmod fix.
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { SmartAuth } from '../../src/auth/smart-client.js';
import { generateKeyPair, loadPrivateKey, writePrivateKeyFile } from '../../src/auth/keys.js';
import { parseCentre } from '../../src/config/centre.js';
import { runCheck } from '../../src/onboarding/check.js';
import { createCapturingLogger, makeTempDir } from './helpers.js';

describe('private key file permissions', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let file: string;

  beforeEach(async () => {
    ({ dir, cleanup } = await makeTempDir('lhn-keymode-'));
    const pair = await generateKeyPair('ES384');
    file = join(dir, `east.${pair.kid}.private.jwk.json`);
    await writePrivateKeyFile(file, pair.privateJwk);
  });
  afterEach(async () => {
    await cleanup();
  });

  it('when a key file is 0644, then it loads, and the warning with the chmod fix is logged once', async () => {
    await chmod(file, 0o644);
    const { logger, text } = createCapturingLogger();
    await loadPrivateKey(file, 'ES384', { logger });
    await loadPrivateKey(file, 'ES384', { logger });
    const warnings = text()
      .split('\n')
      .filter((l) => l.includes('group or others can read it'));
    expect(warnings).toHaveLength(1);
    const line = JSON.parse(warnings[0]!) as { level: number; msg: string; mode: string };
    expect(line.level).toBe(40);
    expect(line.mode).toBe('0644');
    expect(line.msg).toContain(`chmod 600 ${file}`);
    expect(line.msg).toContain('defaultMode');
    // The key itself never reaches the log.
    expect(text()).not.toMatch(/"d":/);
  });

  it('when a key file is 0600, then nothing is logged', async () => {
    const { logger, text } = createCapturingLogger();
    await loadPrivateKey(file, 'ES384', { logger });
    expect(text()).not.toContain('group or others');
  });

  describe('onboarding check', () => {
    const auth: SmartAuth = {
      discover: () => Promise.reject(new Error('no EHR in this test')),
      getAccessToken: () => Promise.reject(new Error('no EHR in this test')),
      invalidate: () => undefined,
      tokenUrl: undefined,
      tokenUrlSource: undefined,
      clockSkewMs: undefined,
    };
    const centreWith = (privateKeyFile: string) =>
      parseCentre(
        {
          id: 'east',
          name: 'East',
          fhir: { baseUrl: 'https://ehr.example/fhir' },
          auth: { clientId: 'bridge', privateKeyFile, kid: 'k1' },
          cohort: { group: 'ibd' },
        },
        join(dir, 'east.yaml'),
      );

    it('when the key file is readable by others, then a required key-file step fails with the chmod fix', async () => {
      await chmod(file, 0o640);
      const report = await runCheck(centreWith(file), { auth });
      const step = report.steps.find((s) => s.id === 'key-file');
      expect(step).toMatchObject({ status: 'failed', required: true });
      expect(step!.reason).toContain('mode 0640');
      expect(step!.hint).toContain(`chmod 600 ${file}`);
      expect(report.ok).toBe(false);
    });

    it('when the key file is 0600, then there is no key-file step', async () => {
      const report = await runCheck(centreWith(file), { auth });
      expect(report.steps.find((s) => s.id === 'key-file')).toBeUndefined();
    });
  });

  it('when an unusable key file is 0604, then the warning is logged before the read fails', async () => {
    const pem = join(dir, 'other.pem');
    await writeFile(pem, 'x');
    await chmod(pem, 0o604);
    const { logger, text } = createCapturingLogger();
    await expect(loadPrivateKey(pem, 'ES384', { logger })).rejects.toThrow();
    expect(text()).toContain('mode 0604');
  });
});
