// Typed registry errors. Every message says what was asked (blob or manifest,
// byte range), of which host and repository, what came back, and after how
// many attempts, so a failed READ in a log explains itself. Messages never
// carry credentials, tokens or Authorization headers.

export interface RegistryErrorInfo {
  /** host[:port] that answered (or failed to), e.g. "mirror.local:5000" */
  host?: string;
  repo?: string;
  /** "blob sha256:… bytes=0-4827", "manifest latest", "token from https://auth/token" */
  what?: string;
  status?: number;
  attempts?: number;
  cause?: unknown;
}

export class RegistryError extends Error {
  readonly host?: string;
  readonly repo?: string;
  readonly what?: string;
  readonly status?: number;
  attempts: number;
  /** worth another attempt (same host or another) */
  readonly retryable: boolean;

  constructor(detail: string, info: RegistryErrorInfo, retryable = false) {
    super(describe(detail, info), info.cause !== undefined ? { cause: info.cause } : undefined);
    this.name = 'RegistryError';
    this.host = info.host;
    this.repo = info.repo;
    this.what = info.what;
    this.status = info.status;
    this.attempts = info.attempts ?? 1;
    this.retryable = retryable;
  }

  /** Updates the attempt count shown in the message. */
  withAttempts(n: number): this {
    this.attempts = n;
    this.message = this.message.replace(/ \(after \d+ attempts?\)$/, '') + (n > 1 ? ` (after ${n} attempts)` : '');
    return this;
  }
}

function describe(detail: string, i: RegistryErrorInfo): string {
  const parts: string[] = [];
  if (i.what) parts.push(i.what);
  if (i.repo) parts.push(`in ${i.repo}`);
  if (i.host) parts.push(`from ${i.host}`);
  const head = parts.length ? `${parts.join(' ')}: ` : '';
  const tail = i.attempts && i.attempts > 1 ? ` (after ${i.attempts} attempts)` : '';
  return `${head}${detail}${tail}`;
}

/** A non-success HTTP status. 5xx, 408 and 429 are retryable. */
export class HttpStatusError extends RegistryError {
  /** ms from Retry-After, if the server sent one */
  readonly retryAfterMs?: number;
  constructor(status: number, info: RegistryErrorInfo, body = '', retryAfterMs?: number) {
    const snippet = body.replace(/\s+/g, ' ').trim().slice(0, 200);
    super(`HTTP ${status}${snippet ? `: ${snippet}` : ''}`, { ...info, status }, status >= 500 || status === 408 || status === 429);
    this.name = 'HttpStatusError';
    this.retryAfterMs = retryAfterMs;
  }
}

/** 404: the host does not have it. A mirror's 404 sends us to the next host. */
export class NotFoundError extends RegistryError {
  constructor(info: RegistryErrorInfo, body = '') {
    super(`not found (HTTP 404)${body ? `: ${body.replace(/\s+/g, ' ').trim().slice(0, 200)}` : ''}`, { ...info, status: 404 });
    this.name = 'NotFoundError';
  }
}

/** 401/403 that re-authentication did not cure, or a token server refusing the credentials. */
export class AuthError extends RegistryError {
  constructor(detail: string, info: RegistryErrorInfo) {
    super(detail, info);
    this.name = 'AuthError';
  }
}

/** Network-level failure: reset, refused, timeout, stall. Retryable. */
export class TransportError extends RegistryError {
  readonly code?: string;
  constructor(detail: string, info: RegistryErrorInfo, code?: string) {
    super(detail, info, true);
    this.name = 'TransportError';
    this.code = code;
  }
  /** The host is not there at all (nothing listening, no route): try the next host at once. */
  get hostDown(): boolean {
    return this.code === 'ECONNREFUSED' || this.code === 'ENOTFOUND' || this.code === 'EHOSTUNREACH' ||
      this.code === 'ENETUNREACH' || this.code === 'EAI_AGAIN' || this.code === 'UND_ERR_CONNECT_TIMEOUT';
  }
}

/** The body was shorter or longer than promised (truncation, or a server that lies about ranges). Retryable. */
export class BodyLengthError extends RegistryError {
  constructor(detail: string, info: RegistryErrorInfo) {
    super(detail, info, true);
    this.name = 'BodyLengthError';
  }
}

/** A protocol violation we will not work around: wrong Content-Range, a 200 for a range too far into a huge blob, … */
export class ProtocolError extends RegistryError {
  constructor(detail: string, info: RegistryErrorInfo, retryable = false) {
    super(detail, info, retryable);
    this.name = 'ProtocolError';
  }
}

/** Content that does not match its digest (manifest, chunk). Retryable: the next copy may be good. */
export class IntegrityError extends RegistryError {
  constructor(detail: string, info: RegistryErrorInfo) {
    super(detail, info, true);
    this.name = 'IntegrityError';
  }
}

/** Every configured host failed; `errors` has the last error of each. */
export class AllHostsFailedError extends RegistryError {
  constructor(readonly errors: RegistryError[], info: RegistryErrorInfo) {
    super(
      `all ${errors.length} hosts failed: ${errors.map((e) => e.message).join('; ')}`,
      { ...info, status: errors[errors.length - 1]?.status, cause: errors[errors.length - 1] },
      errors.some((e) => e.retryable),
    );
    this.name = 'AllHostsFailedError';
    this.attempts = errors.reduce((n, e) => n + e.attempts, 0);
  }
}

/** The caller aborted (prefetch cancelled, daemon shutting down). Never retried. */
export class AbortedError extends Error {
  constructor(what: string) {
    super(`${what}: aborted`);
    this.name = 'AbortError';
  }
}

/** A bounded label for an error: http_<status>, not_found, auth, transport, integrity, protocol or other. */
export function errorKind(err: RegistryError): string {
  if (err instanceof NotFoundError) return 'not_found';
  if (err instanceof AuthError) return 'auth';
  if (err instanceof HttpStatusError) return `http_${err.status}`;
  if (err instanceof TransportError || err instanceof BodyLengthError) return 'transport';
  if (err instanceof IntegrityError) return 'integrity';
  if (err instanceof ProtocolError) return 'protocol';
  return 'other';
}
