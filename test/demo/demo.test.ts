// The demo is the README's first command: it must do the whole job and report the truth.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { runDemo } from '../../src/demo/run-demo.js';

const REDIS_URL = 'redis://127.0.0.1:6379';

class Collect extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
}

describe('the demo', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('when run once, then every intended visit reaches the registry exactly as the generator meant it', async () => {
    const workDir = await mkdtemp(join(tmpdir(), 'lhn-demo-test-'));
    dirs.push(workDir);
    const out = new Collect();
    const summary = await runDemo({
      redisUrl: REDIS_URL,
      once: true,
      patients: 25,
      seed: 7,
      port: 0,
      workDir,
      out,
    });
    expect(summary.patients).toBe(25);
    expect(summary.visits).toBeGreaterThan(25);
    expect(summary.matchingTruth).toBe(summary.visits);
    expect(summary.delivered).toBeGreaterThanOrEqual(summary.visits);
    expect(summary.remissionShare).not.toBeNull();
    expect(out.text).toContain('Result: OK');
    expect(out.text).toMatch(
      /lhn-bridge demo: summary[\s\S]*dashboard\s+http:\/\/127\.0\.0\.1:\d+\//,
    );
    expect(out.text).not.toContain('differences from intent');
    // The demo centre's PHI never reaches the terminal.
    expect(out.text).not.toMatch(/\bZQ\d{9}\b/);
  });
});
