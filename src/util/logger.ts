// One pino logger factory for every process. Logs carry ids and counts only; these redaction
// paths are a second line of defence for anything that slips through (tokens, keys, bodies).
import { pino, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

/** Paths pino blanks out wherever they appear (one or two levels deep). */
export const REDACT_PATHS = [
  'authorization',
  'Authorization',
  'headers.authorization',
  'req.headers.authorization',
  'req.headers["x-api-key"]',
  'token',
  'accessToken',
  'access_token',
  'refreshToken',
  'clientSecret',
  'client_assertion',
  'privateKey',
  'secret',
  'pseudonymSecret',
  'apiKey',
  'resource',
  'body',
  'entry',
  '*.authorization',
  '*.token',
  '*.accessToken',
  '*.access_token',
  '*.client_assertion',
  '*.privateKey',
  '*.secret',
  '*.apiKey',
  '*.resource',
  '*.body',
];

export interface CreateLoggerOptions {
  level?: string;
  name?: string;
  /** Where to write; defaults to stdout. Tests pass a stream to inspect output. */
  destination?: NodeJS.WritableStream;
}

/** Builds a JSON logger with the project's redaction rules. */
export function createLogger(options: CreateLoggerOptions = {}): Logger {
  const config: LoggerOptions = {
    level: options.level ?? 'info',
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: options.name ? { name: options.name } : {},
  };
  return options.destination
    ? pino(config, options.destination as pino.DestinationStream)
    : pino(config);
}

/** A logger that writes nothing, for tests and library callers that pass none. */
export const silentLogger: Logger = pino({ level: 'silent' });
