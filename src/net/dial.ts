// Outbound TCP connection that becomes a FramedConn.

import type { Socket } from "bun";
import { FramedConn, type FramedConnHandlers, type FramedConnOptions } from "./conn";
import type { RefusedFrame } from "./listener";
import { certIdentity, TlsError, type TlsMaterial } from "./tls";

export const DEFAULT_DIAL_TIMEOUT_MS = 5000;

/** A connection attempt failed (refused, unreachable, timed out). */
export class DialError extends Error {
  override name = "DialError";
}

/** The node refused the connection and said why (a `refused` frame, then it closed). */
export class RefusedError extends Error {
  override name = "RefusedError";
  constructor(
    readonly code: string,
    message: string,
    /** The refusing node's cluster id, when it said (RefusedFrame.cluster). */
    readonly cluster?: string,
  ) {
    super(message);
  }
}

/** The addresses and names in a certificate's subjectaltname ("IP Address:127.0.0.1, DNS:host"). */
function certificateNames(subjectAltName: string | undefined): string[] {
  return (subjectAltName ?? "").split(",").map((part) => part.trim().replace(/^(IP Address|DNS):/, ""));
}

/** Explains an OpenSSL error for a person: what failed, and what to check. */
function tlsFailure(target: string, err: Error | null | undefined, when: string): TlsError {
  const reason = err?.message ?? "the connection was closed";
  let hint = "check that the node and this client use certificates of the same cluster CA (--certs)";
  if (/verify|self.signed|issuer/i.test(reason)) hint = "the node's certificate is not signed by this client's CA: use the certificates of this cluster (--certs)";
  if (/CERTIFICATE_REQUIRED|PEER_DID_NOT_RETURN/i.test(reason)) hint = "the node requires a client certificate: use --certs DIR, --ca/--cert/--key or RAFTKV_CERTS";
  else if (/expired/i.test(reason)) hint = "a certificate has expired: issue a new one with `raftkv certs client`";
  else if (/closed|disconnected|WRONG_VERSION|ECONNRESET/i.test(reason)) hint = "is the node running without TLS? drop --certs (and RAFTKV_CERTS) for a plaintext cluster";
  return new TlsError(`TLS ${when} with ${target} failed: ${reason}; ${hint}`, { cause: err ?? undefined });
}

export interface DialHandlers extends FramedConnHandlers, FramedConnOptions {
  /**
   * The connection is up. Runs inside the socket's open handler, before the promise resolves and before
   * any frame from the peer is delivered, so a greeting sent here is the first frame on the wire.
   * A throw closes the connection and rejects the dial.
   */
  onOpen?: (conn: FramedConn) => void;
  /**
   * Mutual TLS: present `cert`, and accept only a server whose certificate the cluster CA `ca` signed
   * for the address dialed. The dial settles after the handshake; a refused handshake rejects with a
   * TlsError, as does a TLS error the server reports later (onError gets it).
   */
  tls?: TlsMaterial;
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

    const failWith = (err: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(err);
    };
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const message = err instanceof Error ? err.message : String(err);
      const code = (err as { code?: unknown } | null)?.code;
      const detail = typeof code === "string" && !message.includes(code) ? `${message} (${code})` : message;
      reject(new DialError(`connect to ${target} failed: ${detail}`, { cause: err }));
    };

    // A `refused` frame ends the connection with its reason (onError gets it); others go to the caller.
    const receiveFrame = (c: FramedConn, value: unknown) => {
      const refusal = value as Partial<RefusedFrame> | null;
      if (refusal && typeof refusal === "object" && refusal.k === "refused") {
        const message = `${target}: ${typeof refusal.message === "string" ? refusal.message : "connection refused"}`;
        c.abort(refusal.code === "TLS_REFUSED" ? new TlsError(message) : new RefusedError(String(refusal.code), message, typeof refusal.cluster === "string" ? refusal.cluster : undefined));
        return;
      }
      handlers.onFrame(c, value);
    };

    let connecting: Promise<Socket<undefined>>;
    try {
      connecting = Bun.connect({
        hostname: host,
        port,
        // rejectUnauthorized: false only so that handshake() learns why a server certificate failed; a
        // server whose certificate did not verify, or was not issued for `host`, is dropped there.
        ...(handlers.tls ? { tls: { ...handlers.tls, serverName: host, rejectUnauthorized: false } } : {}),
        socket: {
          binaryType: "uint8array",
          open(socket: Socket<undefined>) {
            if (settled) {
              socket.terminate(); // gave up on it already
              return;
            }
            socket.setNoDelay(true);
            if (handlers.tls) return; // adopted after the handshake: TLS takes no bytes before it
            adopt(socket);
          },
          handshake(socket: Socket<undefined>, success: boolean, authorizationError: Error | null) {
            if (settled) {
              socket.terminate();
              return;
            }
            if (!success || authorizationError || !socket.authorized) {
              failWith(tlsFailure(target, authorizationError ?? new Error("the node's certificate did not verify"), "handshake"));
              socket.terminate(); // after failWith: terminate() runs the close handler at once
              return;
            }
            const peerCert = socket.getPeerCertificate();
            if (!certificateNames(peerCert?.subjectaltname).includes(host)) {
              failWith(new TlsError(`TLS with ${target}: the node's certificate is not issued for ${host} (it names ${peerCert?.subjectaltname ?? "no address"}); reissue it with \`raftkv certs init\``));
              socket.terminate();
              return;
            }
            const identity = certIdentity(peerCert?.subject as Record<string, unknown> | undefined);
            if (typeof identity === "string" || identity.kind !== "node") {
              failWith(new TlsError(`TLS with ${target}: the server's certificate is not a node certificate of the cluster CA (${typeof identity === "string" ? identity : "a client certificate"})`));
              socket.terminate();
              return;
            }
            adopt(socket);
          },
          data(_socket: Socket<undefined>, chunk: Uint8Array) {
            conn?.receive(chunk);
          },
          drain() {
            conn?.drain();
          },
          close(_socket: Socket<undefined>, error?: Error) {
            if (conn) conn.socketClosed(error);
            else if (handlers.tls) failWith(tlsFailure(target, error, "handshake"));
          },
          error(_socket: Socket<undefined>, error: Error) {
            if (handlers.tls) {
              // A server that refuses our certificate says so after the handshake (TLS 1.3 alerts).
              const err = tlsFailure(target, error, "connection");
              if (conn) conn.abort(err);
              else failWith(err);
              return;
            }
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

    function adopt(socket: Socket<undefined>): void {
      const opened = new FramedConn(socket, { ...handlers, onFrame: receiveFrame }, {
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
    }
  });
}
