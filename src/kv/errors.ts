// Errors of the key-value state machine. Every error carries a stable machine-readable code and a
// message that says what was wrong and by how much.

export type KvErrorCode =
  | "KEY_TOO_LARGE"
  | "VALUE_TOO_LARGE"
  | "EMPTY_KEY"
  | "TXN_TOO_LARGE"
  | "BAD_COMMAND"
  | "STALE_SEQUENCE"
  | "SESSION_EXPIRED"
  | "RESULT_TOO_LARGE"
  | "COMPACTED"
  | "FUTURE_REVISION"
  | "LEASE_NOT_FOUND"
  | "LEASE_EXISTS"
  | "BAD_SNAPSHOT"
  | "INTERNAL";

export class KvError extends Error {
  readonly code: KvErrorCode;

  constructor(code: KvErrorCode, message: string) {
    super(message);
    this.name = "KvError";
    this.code = code;
  }

  toJSON(): { code: KvErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

export function isKvError(error: unknown): error is KvError {
  return error instanceof KvError;
}
