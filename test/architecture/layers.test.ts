// Dependencies point one way (docs: style guide): entry points -> api / queues -> sync ->
// fhir, auth, mapping, registry, onboarding -> config, util. The mapping core is pure: it
// imports no I/O. This reads every import in src/ and queues/ and fails on one that points
// the wrong way.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '../..');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return name.endsWith('.ts') ? [path] : [];
  });
}

/** The layer a repository path belongs to, or undefined for paths outside the layering. */
function layerOf(path: string): string | undefined {
  const rel = relative(root, path).replace(/\\/g, '/');
  if (rel.startsWith('queues/')) return 'queues';
  const m = /^src\/([^/]+)\//.exec(rel);
  if (m) return m[1];
  if (/^src\/[^/]+\.ts$/.test(rel)) return 'entry';
  if (rel.startsWith('fixtures/')) return 'fixtures';
  return undefined;
}

// What each layer may import from (besides itself). Entry points and commands may use all.
const ALLOWED: Record<string, string[]> = {
  config: [],
  util: ['config'],
  mapping: ['registry'],
  registry: ['config', 'util'],
  packs: ['mapping', 'registry', 'config'],
  auth: ['config', 'util'],
  fhir: ['auth', 'config', 'util'],
  onboarding: ['auth', 'fhir', 'mapping', 'packs', 'config', 'util'],
  sync: ['fhir', 'auth', 'mapping', 'packs', 'registry', 'config', 'util', 'queues'],
  queues: ['sync', 'fhir', 'auth', 'mapping', 'packs', 'registry', 'config', 'util'],
  alerts: ['sync', 'config', 'util'],
  api: ['alerts', 'sync', 'queues', 'onboarding', 'auth', 'registry', 'config', 'util'],
};

const NODE_IO = /^(node:)?(fs|fs\/promises|net|http|https|child_process|dgram|tls)$/;
const IO_PACKAGES = new Set(['ioredis', 'bullmq', 'express', 'fhir-kit-client', 'undici']);

function imports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]/gm)].map(
    (m) => m[1]!,
  );
}

const files = [...sourceFiles(join(root, 'src')), ...sourceFiles(join(root, 'queues'))];

describe('architecture', () => {
  it('when a module imports another, then the import points down the layers', () => {
    const wrong: string[] = [];
    for (const file of files) {
      const from = layerOf(file);
      if (!from || !(from in ALLOWED)) continue;
      for (const spec of imports(file)) {
        if (!spec.startsWith('.')) continue;
        const to = layerOf(resolve(dirname(file), spec));
        if (!to || to === from) continue;
        if (!ALLOWED[from]!.includes(to)) wrong.push(`${relative(root, file)} -> ${spec}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it('when the mapping core is loaded, then it brings no I/O with it', () => {
    const io: string[] = [];
    for (const file of files.filter((f) => layerOf(f) === 'mapping')) {
      for (const spec of imports(file)) {
        if (NODE_IO.test(spec) || IO_PACKAGES.has(spec))
          io.push(`${relative(root, file)} -> ${spec}`);
      }
    }
    expect(io).toEqual([]);
  });

  it('when src reads the environment, then it is the config loader or a CLI entry point', () => {
    const readers = files
      .filter((f) => /process\.env\b/.test(readFileSync(f, 'utf8')))
      .map((f) => relative(root, f).replace(/\\/g, '/'))
      .filter((f) => f !== 'src/config/service.ts' && !f.startsWith('src/commands/'));
    expect(readers).toEqual([]);
  });
});
