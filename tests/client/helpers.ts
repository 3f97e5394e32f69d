// A scripted raftkv node for the client library's tests: it answers each request as the test says.

import { afterEach } from "bun:test";
import { listenFrames, type FrameListener } from "../../src/net";

export type Answer = { ok: true; result: unknown } | { ok: false; code: string; message: string };

let servers: FrameListener[] = [];
afterEach(() => {
  for (const s of servers) s.stop();
  servers = [];
});

/**
 * A server that answers request n (counted from 1) with `answer(req, n)`, after `delayMs` if given;
 * `answer` undefined: it never answers. Stopped after each test. `requests` holds every request received.
 */
export function scriptedNode(answer?: (req: Record<string, unknown>, n: number) => Answer, delayMs?: number) {
  const requests: Record<string, unknown>[] = [];
  const server = listenFrames({
    hostname: "127.0.0.1",
    port: 0,
    onFrame: (conn, value) => {
      const req = value as Record<string, unknown> & { id: number };
      const n = requests.push(req);
      if (!answer) return;
      const reply = () => conn.send({ k: "res", id: req.id, ...answer(req, n) });
      if (delayMs === undefined) reply();
      else setTimeout(reply, delayMs);
    },
  });
  servers.push(server);
  return { endpoint: `127.0.0.1:${server.port}`, requests, count: () => requests.length };
}
