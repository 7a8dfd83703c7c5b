// An error meant for the person at the terminal: printed as its message alone (no stack),
// with the given exit code.
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 2,
  ) {
    super(message);
    this.name = 'CliError';
  }
}
