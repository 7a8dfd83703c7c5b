// Text read from files people make: editors and exports on Windows (Notepad, Excel's
// "CSV UTF-8", some EHR export tools) start UTF-8 files with a byte order mark, which
// Node keeps when it decodes a file and JSON.parse refuses ("not valid JSON at column 1").
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

/** The text without a leading byte order mark (U+FEFF), if it has one. */
export function stripBom(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/** A UTF-8 file's text, without a leading byte order mark. */
export async function readTextFile(path: string): Promise<string> {
  return stripBom(await readFile(path, 'utf8'));
}

/** A UTF-8 file's text, without a leading byte order mark (synchronously). */
export function readTextFileSync(path: string): string {
  return stripBom(readFileSync(path, 'utf8'));
}
