// `npm run bench`: runs every benchmark as its own process (so one's memory does not weigh
// on another's), echoes their output, and records their `bench ...` lines in
// bench/RESULTS.md with the date, machine and Node version, so figures travel with the code.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const benches = ['bench:mapping', 'bench:mapping-floor', 'bench:sync'];
const extraArgs = process.argv.slice(2);

const lines: string[] = [];
let failed = false;
for (const name of benches) {
  process.stdout.write(`== npm run ${name}\n`);
  const result = spawnSync(
    'npm',
    ['run', '--silent', name, ...(extraArgs.length ? ['--', ...extraArgs] : [])],
    {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  process.stdout.write(result.stdout);
  const found = result.stdout.split('\n').filter((l) => l.startsWith('bench '));
  if (result.status !== 0 || found.length === 0) {
    failed = true;
    lines.push(`${name}: failed (exit ${result.status ?? 'signal'})`);
  } else lines.push(...found);
}

const cpu = cpus()[0]?.model ?? 'unknown CPU';
const header = `## ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC: ${cpus().length} x ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
const file = join(root, 'bench', 'RESULTS.md');
const previous = existsSync(file)
  ? readFileSync(file, 'utf8').replace(/^# Benchmark results\n+/, '')
  : '';
const entry = `${header}\n\n${lines.map((l) => `    ${l}`).join('\n')}\n`;
writeFileSync(
  file,
  `# Benchmark results\n\nWritten by \`npm run bench\`, newest first. Machines are shared and noisy: compare ratios from one run.\n\n${entry}\n${previous.replace(/^Written by[^\n]*\n+/, '')}`,
);
process.stdout.write(`\nrecorded in bench/RESULTS.md\n`);
process.exitCode = failed ? 1 : 0;
