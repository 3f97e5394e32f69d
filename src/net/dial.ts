// Outbound TCP connection that becomes a FramedConn.

import type { Socket } from "bun";
import { FramedConn, type FramedConnHandlers, type FramedConnOptions } from "./conn";

export const DEFAULT_DIAL_TIMEOUT_MS = 5000;

/** A connection attempt failed (refused, unreachable, timed out). */
export class DialError extends Error {
  override name = "DialError";
}

export interface DialHandlers extends FramedConnHandlers, FramedConnOptions {
  /**
   * The connection is up. Runs inside the socket's open handler, before the promise resolves and before
   * any frame from the peer is delivered, so a greeting sent here is the first frame on the wire.
   * A throw closes the connection and rejects the dial.
   */
  onOpen?: (conn: FramedConn) => void;
}

/**
 * Connects to host:port. Resolves with the FramedConn once the TCP connection is established; rejects
 * with a DialError on failure or when timeoutMs passes first (a connection that completes after the
 * timeout is closed at once). onFrame may run before the caller's await resumes, for a frame the server
 * sends at once; use handlers.onOpen to act on the connection before anything else happens.
 */
export function dialFrames(
  host: string,
  port: number,
  handlers: DialHandlers,
  timeoutMs: number = DEFAULT_DIAL_TIMEOUT_MS,
): Promise<FramedConn> {
  const target = `${host}:${port}`;
  return new Promise<FramedConn>((resolve, reject) => {
    let settled = false;
    let conn: FramedConn | undefined;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      reject(new DialError(`connect to ${target} timed out after ${timeoutMs} ms`));
    }, timeoutMs);

    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const message = err instanceof Error ? err.message : String(err);
      const code = (err as { code?: unknown } | null)?.code;
      const detail = typeof code === "string" && !message.includes(code) ? `${message} (${code})` : message;
      reject(new DialError(`connect to ${target} failed: ${detail}`, { cause: err }));
    };

    let connecting: Promise<Socket<undefined>>;
    try {
      connecting = Bun.connect({
        hostname: host,
        port,
        socket: {
          binaryType: "uint8array",
          open(socket: Socket<undefined>) {
            if (settled) {
              socket.terminate(); // gave up on it already
              return;
            }
            socket.setNoDelay(true);
            const opened = new FramedConn(socket, handlers, {
              maxFrameBytes: handlers.maxFrameBytes,
              maxQueuedBytes: handlers.maxQueuedBytes,
            });
            conn = opened;
            if (handlers.onOpen) {
              try {
                handlers.onOpen(opened);
              } catch (err) {
                const message = err instanceof Error ? err.message : String(err);
                opened.close(`open handler failed: ${message}`);
                fail(err);
                return;
              }
            }
            settled = true;
            clearTimeout(timer);
            resolve(opened);
          },
          data(_socket: Socket<undefined>, chunk: Uint8Array) {
            conn?.receive(chunk);
          },
          drain() {
            conn?.drain();
          },
          close(_socket: Socket<undefined>, error?: Error) {
            conn?.socketClosed(error);
          },
          error(_socket: Socket<undefined>, error: Error) {
            console.error(`error net: socket handler threw: ${error.message}`);
            conn?.close(`socket error: ${error.message}`);
          },
          connectError(_socket: Socket<undefined>, error: Error) {
            fail(error);
          },
        },
      });
    } catch (err) {
      fail(err);
      return;
    }
    connecting.then(undefined, fail);
  });
}
