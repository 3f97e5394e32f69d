// TCP (or mutual-TLS) listener whose every accepted socket becomes a FramedConn, with the node's
// connection limits: connections in total and per remote address, and a deadline for connections that
// owe a frame (never sent one, or stalled in the middle of one) or a TLS handshake.

import type { Socket } from "bun";
import { FramedConn, type FramedConnOptions } from "./conn";
import { encodeFrame } from "./framing";
import { DEFAULT_NET_LIMITS } from "./limits";
import { certIdentity, type CertIdentity, type TlsMaterial } from "./tls";

/** How often the listener looks for connections over their frame timeout. */
const SWEEP_EVERY_MS = 1000;

export interface ListenFramesOptions extends FramedConnOptions {
  hostname: string;
  /** 0 picks a free port; read the real one from the returned listener. */
  port: number;
  /** Mutual TLS: every connection must present a certificate signed by `ca`. */
  tls?: TlsMaterial;
  maxConnections?: number;
  maxConnectionsPerAddress?: number;
  frameTimeoutMs?: number;
  onFrame: (conn: FramedConn, value: unknown) => void;
  /** A connection was accepted (after its TLS handshake); frames can be sent on it from here on. */
  onOpen?: (conn: FramedConn) => void;
  /** Called once per accepted connection when it closes, for any reason. */
  onClose?: (conn: FramedConn) => void;
  /** Bad frame from the peer or a throw from onFrame; the connection is already closed. */
  onError?: (conn: FramedConn, err: Error) => void;
  /**
   * A connection refused before it became a FramedConn, or closed for a limit: failed TLS handshake,
   * too many connections, frame timeout. `remote` is "address:port".
   */
  onRefused?: (remote: string, reason: string) => void;
}

export interface FrameListener {
  readonly hostname: string;
  readonly port: number;
  /** Connections accepted and not yet closed. */
  readonly connections: ReadonlySet<FramedConn>;
  /**
   * New TLS material for connections accepted from now on (certificate rotation); open connections
   * keep theirs. The listening socket is replaced on the same port.
   */
  reloadTls(tls: TlsMaterial): void;
  /** Stops accepting and closes every open connection (their onClose runs). Idempotent. */
  stop(): void;
}

interface SocketSlot {
  conn?: FramedConn;
  remote: string;
  address: string;
  openedAt: number;
  /** Refused for a limit: close once it can be told why (after the TLS handshake). */
  refusal?: string;
  /** The refusal of this socket has been reported (onRefused). */
  reported?: boolean;
}

/** Frame a refused connection is sent before it is closed; clients report its message. */
export interface RefusedFrame {
  k: "refused";
  code: string;
  message: string;
  /** A node refusing a peer names its cluster, so a joining node can tell a wrong nodes.conf (server/gate.ts). */
  cluster?: string;
}

export function listenFrames(options: ListenFramesOptions): FrameListener {
  const maxConnections = options.maxConnections ?? DEFAULT_NET_LIMITS.maxConnections;
  const maxPerAddress = options.maxConnectionsPerAddress ?? DEFAULT_NET_LIMITS.maxConnectionsPerAddress;
  const frameTimeoutMs = options.frameTimeoutMs ?? DEFAULT_NET_LIMITS.frameTimeoutMs;
  const connections = new Set<FramedConn>();
  const sockets = new Set<Socket<SocketSlot>>();
  const perAddress = new Map<string, number>();
  const handlers = {
    onFrame: options.onFrame,
    onClose: (conn: FramedConn) => {
      connections.delete(conn);
      options.onClose?.(conn);
    },
    onError: options.onError,
  };
  const refused = (slot: SocketSlot, reason: string) => {
    if (slot.reported) return;
    slot.reported = true;
    try {
      options.onRefused?.(slot.remote, reason);
    } catch (err) {
      console.error(`error net: onRefused handler threw: ${String(err)}`);
    }
  };

  const adopt = (socket: Socket<SocketSlot>, certificate?: CertIdentity) => {
    const slot = socket.data;
    const conn = new FramedConn(socket, handlers, {
      maxFrameBytes: options.maxFrameBytes,
      maxQueuedBytes: options.maxQueuedBytes,
      slowReader: options.slowReader,
      partialFrames: options.partialFrames,
      certificate,
    });
    slot.conn = conn;
    if (slot.refusal) {
      refused(slot, slot.refusal);
      conn.send({ k: "refused", code: "TOO_MANY_CONNECTIONS", message: slot.refusal } satisfies RefusedFrame);
      conn.close(slot.refusal);
      return;
    }
    connections.add(conn);
    if (options.onOpen) {
      try {
        options.onOpen(conn);
      } catch (err) {
        conn.close(`open handler failed: ${err instanceof Error ? err.message : String(err)}`);
        console.error(`error net: onOpen handler threw: ${String(err)}`);
      }
    }
  };

  const socketHandler = {
    binaryType: "uint8array" as const,
    open(socket: Socket<SocketSlot>) {
      const address = socket.remoteAddress;
      const slot: SocketSlot = { remote: `${address}:${socket.remotePort}`, address, openedAt: performance.now() };
      socket.data = slot;
      sockets.add(socket);
      const fromAddress = (perAddress.get(address) ?? 0) + 1;
      perAddress.set(address, fromAddress);
      if (sockets.size > maxConnections) {
        slot.refusal = `node has ${maxConnections} connections open, its limit; try another node or later`;
      } else if (fromAddress > maxPerAddress) {
        slot.refusal = `${address} has ${maxPerAddress} connections open to this node, the limit per address`;
      }
      socket.setNoDelay(true);
      if (!options.tls) adopt(socket);
    },
    handshake(socket: Socket<SocketSlot>, success: boolean, authorizationError: Error | null) {
      const slot = socket.data;
      if (!success) {
        refused(slot, `TLS handshake failed: ${authorizationError?.message ?? "no reason given"}`);
        socket.terminate();
        return;
      }
      const subject = socket.getPeerCertificate()?.subject as Record<string, unknown> | undefined;
      let identity: CertIdentity | string;
      if (authorizationError || !socket.authorized) {
        const why = subject ? (authorizationError?.message ?? "not signed by the cluster CA") : "no client certificate";
        identity = `TLS handshake failed: certificate refused: ${why}`;
      } else {
        identity = certIdentity(subject);
        if (typeof identity === "string") identity = `TLS handshake failed: certificate refused: ${identity}`;
      }
      if (typeof identity === "string") {
        // The TLS session is up but its certificate did not verify (the listener does not let OpenSSL
        // drop it silently): tell the client why, then close. No frame of it is ever read.
        refused(slot, identity);
        const frame = encodeFrame({ k: "refused", code: "TLS_REFUSED", message: `the node refused this connection: ${identity}` } satisfies RefusedFrame);
        socket.write(frame);
        socket.end();
        return;
      }
      adopt(socket, identity);
    },
    data(socket: Socket<SocketSlot>, chunk: Uint8Array) {
      socket.data.conn?.receive(chunk);
    },
    drain(socket: Socket<SocketSlot>) {
      socket.data.conn?.drain();
    },
    close(socket: Socket<SocketSlot>, error?: Error) {
      const slot = socket.data;
      if (!sockets.delete(socket)) return;
      // A TLS client that gave up during the handshake (e.g. it does not trust this node's certificate).
      if (!slot.conn) refused(slot, `TLS handshake failed: closed by the other end${error ? ` (${error.message})` : ""} before it completed`);
      const left = (perAddress.get(slot.address) ?? 1) - 1;
      if (left > 0) perAddress.set(slot.address, left);
      else perAddress.delete(slot.address);
      slot.conn?.socketClosed(error);
    },
    error(socket: Socket<SocketSlot>, error: Error) {
      // Reached for TLS failures after the handshake and if a handler above throws.
      const slot = socket.data;
      if (slot.conn) slot.conn.close(`socket error: ${error.message}`);
      else {
        refused(slot, `socket error: ${error.message}`);
        socket.terminate();
      }
    },
  };

  const bind = (tls: TlsMaterial | undefined, port: number) => {
    try {
      return Bun.listen<SocketSlot>({
        hostname: options.hostname,
        port,
        // rejectUnauthorized: false only so that handshake() can tell a refused client why before
        // closing; a connection whose certificate did not verify never becomes a FramedConn.
        ...(tls ? { tls: { ...tls, requestCert: true, rejectUnauthorized: false } } : {}),
        socket: socketHandler,
      });
    } catch (err) {
      throw new Error(
        `cannot listen on ${options.hostname}:${port}: ${err instanceof Error ? err.message : String(err)}`,
        { cause: err },
      );
    }
  };

  let listening = bind(options.tls, options.port);
  const port = listening.port;

  const sweep = setInterval(() => {
    const now = performance.now();
    for (const socket of sockets) {
      const slot = socket.data;
      if (slot.conn?.dropIfPausedSince(now - frameTimeoutMs)) continue;
      const since = slot.conn ? slot.conn.awaitingFrameSince : slot.openedAt;
      if (since === 0 || now - since < frameTimeoutMs) continue;
      const why = slot.conn
        ? slot.conn.partialFrameBytes > 0
          ? `frame timeout: a frame was not completed within ${frameTimeoutMs} ms (${slot.conn.partialFrameBytes} bytes received)`
          : `frame timeout: no frame within ${frameTimeoutMs} ms of connecting`
        : `handshake timeout: no TLS handshake within ${frameTimeoutMs} ms`;
      refused(slot, why);
      if (slot.conn) slot.conn.close(why);
      else socket.terminate();
    }
  }, SWEEP_EVERY_MS);
  sweep.unref?.();

  let stopped = false;
  return {
    hostname: listening.hostname,
    port,
    connections,
    reloadTls(tls: TlsMaterial) {
      if (stopped) return;
      // Bun cannot swap a listener's certificates: close the listening socket (accepted connections stay
      // open) and listen again on the same port with the new material.
      listening.stop(false);
      listening = bind(tls, port);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(sweep);
      for (const conn of [...connections]) conn.close("listener stopped");
      for (const socket of [...sockets]) socket.terminate();
      listening.stop(true);
    },
  };
}
