// TCP listener whose every accepted socket becomes a FramedConn.

import type { Socket } from "bun";
import { FramedConn, type FramedConnOptions } from "./conn";

export interface ListenFramesOptions extends FramedConnOptions {
  hostname: string;
  /** 0 picks a free port; read the real one from the returned listener. */
  port: number;
  onFrame: (conn: FramedConn, value: unknown) => void;
  /** A connection was accepted; frames can be sent on it from here on. */
  onOpen?: (conn: FramedConn) => void;
  /** Called once per accepted connection when it closes, for any reason. */
  onClose?: (conn: FramedConn) => void;
  /** Bad frame from the peer or a throw from onFrame; the connection is already closed. */
  onError?: (conn: FramedConn, err: Error) => void;
}

export interface FrameListener {
  readonly hostname: string;
  readonly port: number;
  /** Connections accepted and not yet closed. */
  readonly connections: ReadonlySet<FramedConn>;
  /** Stops accepting and closes every open connection (their onClose runs). Idempotent. */
  stop(): void;
}

type SocketSlot = { conn?: FramedConn };

export function listenFrames(options: ListenFramesOptions): FrameListener {
  const connections = new Set<FramedConn>();
  const handlers = {
    onFrame: options.onFrame,
    onClose: (conn: FramedConn) => {
      connections.delete(conn);
      options.onClose?.(conn);
    },
    onError: options.onError,
  };
  const connOptions: FramedConnOptions = {
    maxFrameBytes: options.maxFrameBytes,
    maxQueuedBytes: options.maxQueuedBytes,
  };

  let server;
  try {
    server = Bun.listen<SocketSlot>({
      hostname: options.hostname,
      port: options.port,
      socket: {
        binaryType: "uint8array",
        open(socket: Socket<SocketSlot>) {
          socket.setNoDelay(true);
          const conn = new FramedConn(socket, handlers, connOptions);
          socket.data = { conn };
          connections.add(conn);
          if (options.onOpen) {
            try {
              options.onOpen(conn);
            } catch (err) {
              conn.close(`open handler failed: ${err instanceof Error ? err.message : String(err)}`);
              console.error(`error net: onOpen handler threw: ${String(err)}`);
            }
          }
        },
        data(socket: Socket<SocketSlot>, chunk: Uint8Array) {
          socket.data?.conn?.receive(chunk);
        },
        drain(socket: Socket<SocketSlot>) {
          socket.data?.conn?.drain();
        },
        close(socket: Socket<SocketSlot>, error?: Error) {
          socket.data?.conn?.socketClosed(error);
        },
        error(socket: Socket<SocketSlot>, error: Error) {
          // Only reached if one of the handlers above throws, which they are written not to do.
          console.error(`error net: socket handler threw: ${error.message}`);
          socket.data?.conn?.close(`socket error: ${error.message}`);
        },
      },
    });
  } catch (err) {
    throw new Error(
      `cannot listen on ${options.hostname}:${options.port}: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  }

  const listening = server;
  let stopped = false;
  return {
    hostname: listening.hostname,
    port: listening.port,
    connections,
    stop() {
      if (stopped) return;
      stopped = true;
      for (const conn of [...connections]) conn.close("listener stopped");
      listening.stop(true);
    },
  };
}
