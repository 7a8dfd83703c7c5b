// A config or centre file that does not parse is reported with its file, line, column and the
// kind of error, never with the text around the error (which can be a secret); a file that
// cannot be read is told apart from one that does not parse (security review finding 5).
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadCentreFile } from '../../src/config/centre.js';
import { loadServiceConfig } from '../../src/config/service.js';
import { locateJsonError } from '../../src/config/parse-error.js';

const dir = mkdtempSync(join(tmpdir(), 'lhn-parse-errors-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

function serviceError(file: string): string {
  try {
    loadServiceConfig({ LHN_CONFIG: file });
  } catch (err) {
    return String(err instanceof Error ? err.message : err);
  }
  throw new Error('expected a config error');
}

async function centreError(file: string): Promise<string> {
  try {
    await loadCentreFile(file);
  } catch (err) {
    return String(err instanceof Error ? err.message : err);
  }
  throw new Error('expected a config error');
}

const asRoot = process.getuid?.() === 0;

describe('service config file (LHN_CONFIG)', () => {
  it('when the JSON file is malformed next to a secret, then the error gives line and column and no part of the secret', () => {
    const file = write(
      'svc.json',
      '{\n  "pseudonymSecret": S3CRET-pseudonym-value-0123456789\n}\n',
    );
    const message = serviceError(file);
    expect(message).toContain(file);
    expect(message).toMatch(/not valid JSON at line 2, column 22 \(unexpected character/);
    expect(message).not.toMatch(/S3CRET|pseudonym-value/);
  });

  it('when the YAML file has a syntax error, then it is a YAML error with line and column, not a read error, and no code frame', () => {
    const file = write('svc.yaml', 'redis:\n  url: redis://x\n bad: [S3CRET-token\n');
    const message = serviceError(file);
    expect(message).toMatch(/not valid YAML at line \d+, column \d+ \([a-z ]+, [A-Z_]+\)/);
    expect(message).not.toMatch(/cannot read/);
    expect(message).not.toMatch(/S3CRET|\^/);
  });

  it('when the file is missing or unreadable, then it says so (an I/O error, not a parse error)', () => {
    expect(serviceError(join(dir, 'nope.yaml'))).toMatch(
      /cannot read the config file named by LHN_CONFIG: the file does not exist \(ENOENT\)/,
    );
    expect(serviceError(dir)).toMatch(/it is a folder, not a file \(EISDIR\)/);
    if (!asRoot) {
      const file = write('locked.yaml', 'centresDir: x\n');
      chmodSync(file, 0o000);
      expect(serviceError(file)).toMatch(/permission denied \(EACCES\)/);
    }
  });
});

describe('centre files', () => {
  it('when a centre JSON file is malformed, then the error names the file, line and column without quoting it', async () => {
    const file = write('east.json', '{"id": "east",\n "auth": {"clientSecret": hunter2-secret}}');
    const message = await centreError(file);
    expect(message).toContain('east.json');
    expect(message).toMatch(/not valid JSON at line 2, column 27/);
    expect(message).not.toContain('hunter2');
  });

  it('when a centre YAML file is malformed, then the error has line and column but no code frame', async () => {
    const file = write('west.yaml', 'id: west\nauth:\n  clientSecret: "hunter2-secret\n');
    const message = await centreError(file);
    expect(message).toMatch(/west\.yaml/);
    expect(message).toMatch(/not valid YAML at line \d+, column \d+/);
    expect(message).not.toContain('hunter2');
  });

  it('when the centre file does not exist, then the error says so', async () => {
    expect(await centreError(join(dir, 'gone.yaml'))).toMatch(
      /cannot read the centre file: the file does not exist \(ENOENT\)/,
    );
  });
});

describe('locateJsonError', () => {
  it.each([
    ['{"a": 1}', undefined],
    ['[1, 2, ', 'unexpected end of input'],
    ['{"a" 1}', 'expected ":" after a property name'],
    ['{"a": "x\n"}', 'control character (such as a line break) inside a string'],
    ['{"a": "\\q"}', 'invalid escape in a string'],
    ['{"a": 1} x', 'unexpected content after the JSON value'],
    ['{a: 1}', 'expected a property name in double quotes'],
    ['"abc', 'unterminated string'],
    ['[01]', 'expected "," or "]"'],
  ])('when the text is %j, then the kind is %j', (text, kind) => {
    let parses = true;
    try {
      JSON.parse(text);
    } catch {
      parses = false;
    }
    expect(parses).toBe(kind === undefined);
    expect(locateJsonError(text)?.kind).toBe(kind);
  });
});
