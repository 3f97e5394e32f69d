import type { ErrorCode } from "../protocol";

/** Codes a caller may see: the server's, plus NO_QUORUM, UNAVAILABLE and TIMEOUT from the retry loop. */
export class RaftKvError extends Error {
  constructor(
    readonly code: ErrorCode | "NO_QUORUM" | "UNAVAILABLE",
    message: string,
  ) {
    super(message);
    this.name = "RaftKvError";
  }
}
