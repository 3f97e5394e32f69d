import { afterEach, describe, expect, test } from "bun:test";
import { type FrameListener, type FramedConn, PeerLink, listenFrames } from "../../src/net";
import { waitFor } from "./helpers";

const HOST = "127.0.0.1";
const cleanups: (() => void)[] = [];
afterEach(() => {
  while (cleanups.length > 0) cleanups.pop()!();
});

/** A listener that records every frame per connection and answers `{ ping }` with `{ pong }`. */
function recordingListener(port: number): { listener: FrameListener; frames: unknown[][] } {
  const frames: unknown[][] = [];
  const perConn = new Map<FramedConn, unknown[]>();
  const listener = listenFrames({
    hostname: HOST,
    port,
    onOpen: (conn) => {
      const list: unknown[] = [];
      perConn.set(conn, list);
      frames.push(list);
    },
    onFrame: (conn, value) => {
      perConn.get(conn)!.push(value);
      const ping = (value as { ping?: number }).ping;
      if (ping !== undefined) conn.send({ pong: ping });
    },
  });
  cleanups.push(() => listener.stop());
  return { listener, frames };
}

describe("PeerLink", () => {
  test("connects, sends hello first, then frames; delivers replies", async () => {
    const { listener, frames } = recordingListener(0);
    const replies: unknown[] = [];
    let connects = 0;
    const link = new PeerLink({
      host: HOST,
      port: listener.port,
      hello: { k: "hello", from: 3 },
      onFrame: (_link, value) => replies.push(value),
      onConnect: () => connects++,
    });
    cleanups.push(() => link.close());
    await waitFor(() => link.connected, "link to connect");
    expect(connects).toBe(1);
    expect(link.send({ ping: 1 })).toBe(true);
    expect(link.send({ ping: 2 })).toBe(true);
    await waitFor(() => replies.length === 2, "two pongs");
    expect(replies).toEqual([{ pong: 1 }, { pong: 2 }]);
    expect(frames).toEqual([[{ k: "hello", from: 3 }, { ping: 1 }, { ping: 2 }]]);
  });

  test("send while the peer is down returns false; reconnects when the listener comes back", async () => {
    const first = recordingListener(0);
    const port = first.listener.port;
    const replies: unknown[] = [];
    const disconnects: string[] = [];
    const link = new PeerLink({
      host: HOST,
      port,
      hello: { k: "hello", from: 1 },
      onFrame: (_link, value) => replies.push(value),
      onDisconnect: (_link, reason) => disconnects.push(reason),
      maxBackoffMs: 200,
    });
    cleanups.push(() => link.close());
    await waitFor(() => link.connected, "first connect");
    expect(link.send({ ping: 1 })).toBe(true);
    await waitFor(() => replies.length === 1, "first pong");

    first.listener.stop();
    await waitFor(() => !link.connected, "link to notice the peer is gone");
    expect(disconnects).toHaveLength(1);
    expect(link.send({ ping: 2 })).toBe(false);
    expect(link.queuedBytes).toBe(0);

    // Let at least one redial fail against the closed port (50 -> 100 on disconnect, -> 200 on failure),
    // then come back on the same port.
    await waitFor(() => link.currentBackoffMs >= 200, "a failed redial");
    expect(link.send({ ping: 3 })).toBe(false);
    const second = recordingListener(port);
    await waitFor(() => link.connected, "reconnect", 3000);
    expect(link.connects).toBe(2);
    expect(link.currentBackoffMs).toBe(50);
    expect(link.send({ ping: 4 })).toBe(true);
    await waitFor(() => replies.length === 2, "pong after reconnect");
    expect(replies).toEqual([{ pong: 1 }, { pong: 4 }]);
    expect(second.frames).toEqual([[{ k: "hello", from: 1 }, { ping: 4 }]]);
  });

  test("close stops reconnecting and send returns false", async () => {
    const { listener, frames } = recordingListener(0);
    const link = new PeerLink({ host: HOST, port: listener.port, hello: { k: "hello", from: 2 } });
    await waitFor(() => link.connected, "connect");
    link.close();
    expect(link.connected).toBe(false);
    expect(link.send({ ping: 1 })).toBe(false);
    await waitFor(() => listener.connections.size === 0, "server to see the close");
    expect(frames).toHaveLength(1);
    link.close();
  });

  test("a link to a port nobody listens on keeps retrying without queueing, and closes cleanly", async () => {
    const { listener } = recordingListener(0);
    const port = listener.port;
    listener.stop();
    const link = new PeerLink({ host: HOST, port, hello: { k: "hello", from: 9 } });
    cleanups.push(() => link.close());
    await waitFor(() => link.currentBackoffMs >= 200, "backoff to grow");
    expect(link.connected).toBe(false);
    expect(link.send({ x: 1 })).toBe(false);
    link.close();
  });
});
