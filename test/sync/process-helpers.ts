// Child worker processes for the crash tests: spawn test/sync/worker-entry.ts with tsx and
// follow its JSON event lines.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { waitFor } from './helpers.js';

const ENTRY = fileURLToPath(new URL('./worker-entry.ts', import.meta.url));

export interface ChildWorker {
  child: ChildProcess;
  events: Record<string, unknown>[];
  exited: Promise<number | null>;
  waitForEvent(match: (e: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<void>;
}

export function spawnWorker(settings: Record<string, unknown>): ChildWorker {
  const child = spawn(process.execPath, ['--import', 'tsx', ENTRY], {
    env: { ...process.env, LHN_TEST_WORKER: JSON.stringify(settings) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const events: Record<string, unknown>[] = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    try {
      events.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // not an event line
    }
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
    if (stderr.length > 20_000) stderr = stderr.slice(-20_000);
  });
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (code) => {
      if (code !== 0 && code !== null && stderr)
        process.stderr.write(`worker stderr:\n${stderr}\n`);
      resolve(code);
    }),
  );
  return {
    child,
    events,
    exited,
    waitForEvent: (match, timeoutMs = 30_000) =>
      waitFor(() => events.some(match), timeoutMs, 'a worker event'),
  };
}
