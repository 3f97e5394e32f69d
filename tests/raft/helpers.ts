// Driving RaftCore by hand in tests: take every Ready, and deliver messages among nodes until quiet.
import type { RaftCore } from "../../src/raft/core";
import type { Message, Ready } from "../../src/raft/types";

/** Collect every Ready (as the runtime would after persisting it) and return them. */
export function drain(n: RaftCore): Ready[] {
  const out: Ready[] = [];
  while (n.hasReady()) {
    const rd = n.ready();
    out.push(rd);
    n.advance(rd);
  }
  return out;
}

/**
 * Deliver messages among `nodes` until quiet; `drop` loses some, `outbox` takes what a node sends after a
 * step (default: the messages of its Readies). Returns every message delivered.
 */
export function deliverAll(
  nodes: Map<number, RaftCore>,
  first: Message[],
  drop: (m: Message) => boolean = () => false,
  outbox: (n: RaftCore) => Message[] = (n) => drain(n).flatMap((r) => r.messages),
): Message[] {
  const seen: Message[] = [];
  let queue = first;
  while (queue.length) {
    const next: Message[] = [];
    for (const m of queue) {
      if (drop(m)) continue;
      const to = nodes.get(m.to);
      if (!to) continue;
      seen.push(m);
      to.step(m);
      next.push(...outbox(to));
    }
    queue = next;
  }
  return seen;
}
