// Where a JSON or YAML text is broken, said without quoting it. V8's JSON.parse messages and
// the yaml library's code frames quote the text around the error: in a config file that can
// be a secret (pseudonymSecret, a registry token), in FHIR input a patient's name. These
// helpers give the line, column and kind of the first error only.
import { YAMLError } from 'yaml';

/** Where and what: 1-based line and column, and the kind of error in words. */
export interface ParseErrorLocation {
  line: number;
  column: number;
  kind: string;
}

/** Finds the first syntax error of a JSON text (undefined when it is valid JSON). */
export function locateJsonError(text: string): ParseErrorLocation | undefined {
  let i = 0;
  const at = (kind: string, offset = i): ParseErrorLocation => {
    const before = text.slice(0, offset);
    const line = before.split('\n').length;
    const column = offset - (before.lastIndexOf('\n') + 1) + 1;
    return { line, column, kind };
  };
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++;
  };
  // Returns an error location, or undefined when a value was read.
  const value = (depth: number): ParseErrorLocation | undefined => {
    if (depth > 10_000) return at('nesting too deep');
    ws();
    if (i >= text.length) return at('unexpected end of input');
    const c = text[i]!;
    if (c === '{' || c === '[') {
      const close = c === '{' ? '}' : ']';
      i++;
      ws();
      if (text[i] === close) {
        i++;
        return undefined;
      }
      for (;;) {
        if (c === '{') {
          ws();
          if (i >= text.length) return at('unexpected end of input');
          if (text[i] !== '"') return at('expected a property name in double quotes');
          const key = string();
          if (key) return key;
          ws();
          if (i >= text.length) return at('unexpected end of input');
          if (text[i] !== ':') return at('expected ":" after a property name');
          i++;
        }
        const inner = value(depth + 1);
        if (inner) return inner;
        ws();
        if (i >= text.length) return at('unexpected end of input');
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === close) {
          i++;
          return undefined;
        }
        return at(`expected "," or "${close}"`);
      }
    }
    if (c === '"') return string();
    if (c === '-' || (c >= '0' && c <= '9')) {
      const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
      if (!m || m[0] === '-') return at('invalid number');
      i += m[0].length;
      return undefined;
    }
    for (const word of ['true', 'false', 'null']) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return undefined;
      }
    }
    return at(
      'unexpected character (a value must be an object, array, string, number, true, false or null)',
    );
  };
  const string = (): ParseErrorLocation | undefined => {
    const start = i;
    i++;
    while (i < text.length) {
      const c = text[i]!;
      if (c === '"') {
        i++;
        return undefined;
      }
      if (c === '\\') {
        const e = text[i + 1];
        if (e === undefined) break;
        if (e === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6)))
            return at('invalid \\u escape in a string');
          i += 6;
          continue;
        }
        if (!'"\\/bfnrt'.includes(e)) return at('invalid escape in a string');
        i += 2;
        continue;
      }
      if (c < ' ') return at('control character (such as a line break) inside a string');
      i++;
    }
    return at('unterminated string', start);
  };
  const error = value(0);
  if (error) return error;
  ws();
  return i < text.length ? at('unexpected content after the JSON value') : undefined;
}

/** "line L, column C: kind" of a JSON text that JSON.parse refused. */
export function describeJsonError(text: string): string {
  const where = locateJsonError(text);
  return where
    ? `not valid JSON at line ${where.line}, column ${where.column} (${where.kind})`
    : 'not valid JSON';
}

/** "line L, column C: kind (CODE)" of a yaml library error, without its code frame. */
export function describeYamlError(err: unknown): string {
  if (err instanceof YAMLError) {
    const pos = err.linePos?.[0];
    const kind = err.code.toLowerCase().replace(/_/g, ' ');
    return pos
      ? `not valid YAML at line ${pos.line}, column ${pos.col} (${kind}, ${err.code})`
      : `not valid YAML (${kind}, ${err.code})`;
  }
  return 'not valid YAML';
}

/** True for a file-system error (ENOENT, EACCES, EISDIR...), as opposed to a parse error. */
export function isIoError(err: unknown): err is NodeJS.ErrnoException {
  return (
    err instanceof Error &&
    !(err instanceof YAMLError) &&
    typeof (err as NodeJS.ErrnoException).code === 'string' &&
    /^E[A-Z]+$/.test((err as NodeJS.ErrnoException).code!)
  );
}

/** Words for a file-system error code: "does not exist", "permission denied"... */
export function describeIoError(err: NodeJS.ErrnoException): string {
  const code = err.code ?? 'unknown';
  if (code === 'ENOENT') return 'the file does not exist (ENOENT)';
  if (code === 'EACCES' || code === 'EPERM')
    return `permission denied (${code}): the process cannot read it`;
  if (code === 'EISDIR') return 'it is a folder, not a file (EISDIR)';
  return `cannot be read (${code})`;
}
