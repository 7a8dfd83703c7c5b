// Text read from files people make: editors and exports on Windows (Notepad, Excel's
// "CSV UTF-8", some EHR export tools) start UTF-8 files with a byte order mark, which
// Node keeps when it decodes a file and JSON.parse refuses ("not valid JSON at column 1").

/** The text without a leading byte order mark (U+FEFF), if it has one. */
export function stripBom(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}
