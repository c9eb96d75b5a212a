// A malformed or truncated image: the message names the structure and field,
// so an operator can tell a corrupt bootstrap from a corrupt blob.
export class FormatError extends Error {
  constructor(
    readonly structure: string,
    message: string,
  ) {
    super(`${structure}: ${message}`);
    this.name = 'FormatError';
  }
}
