// A seeded random workload generator over a small key space, exercising every command kind.

import type { ApplyMeta, Command, TxnOp } from "../../src/kv";
import { b, randInt } from "./helpers";

const ALPHABET = ["a", "b", "c", "\u00ff", "\u0000"];

export function randomKey(random: () => number, maxLength = 3): Uint8Array {
  const length = 1 + randInt(random, maxLength);
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = ALPHABET[randInt(random, ALPHABET.length)]!.charCodeAt(0);
  return bytes;
}

function randomValue(random: () => number): Uint8Array {
  const bytes = new Uint8Array(randInt(random, 12));
  for (let i = 0; i < bytes.length; i++) bytes[i] = randInt(random, 256);
  return bytes;
}

function randomTxnOp(random: () => number): TxnOp {
  const pick = randInt(random, 3);
  if (pick === 0) return { op: "put", key: randomKey(random), value: randomValue(random) };
  if (pick === 1) return { op: "del", key: randomKey(random, 2), prefix: random() < 0.5 };
  return { op: "range", key: randomKey(random, 1), prefix: true, limit: randInt(random, 3) };
}

/**
 * One random command and its meta (time advances by up to 50 ms per step), for step = log index - 1.
 * Every 250 steps 8 sessions are registered (ids s<index>); writes use one of the latest 8. At step 8
 * the session TTL drops to 2 s, so idle sessions expire and their writes get SESSION_EXPIRED.
 */
export function randomStep(random: () => number, step: number): { cmd: Command; meta: ApplyMeta } {
  const now = step * 25 + randInt(random, 50);
  const meta: ApplyMeta = { now };
  if (step % 250 < 8) return { cmd: { op: "sessionRegister" }, meta };
  if (step === 8) return { cmd: { op: "sessionTtl", ttlMs: 2000 }, meta };
  if (random() < 0.4) {
    meta.clientId = `s${step - (step % 250) + 1 + randInt(random, 8)}`;
    meta.seq = step + 1 - randInt(random, 2); // sometimes a duplicate-looking seq
  }
  const leaseId = 1 + randInt(random, 6);
  const roll = random();
  let cmd: Command;
  if (roll < 0.4) {
    cmd = { op: "put", key: randomKey(random), value: randomValue(random) };
    if (random() < 0.3) cmd.lease = leaseId;
  } else if (roll < 0.55) {
    const key = randomKey(random, 2);
    cmd = random() < 0.5 ? { op: "del", key } : { op: "del", key, prefix: true };
  } else if (roll < 0.7) {
    cmd = {
      op: "txn",
      compare: [{ key: randomKey(random, 1), target: random() < 0.5 ? "exists" : "absent" }],
      success: [randomTxnOp(random), randomTxnOp(random)],
      failure: [randomTxnOp(random)],
    };
  } else if (roll < 0.78) {
    cmd = { op: "leaseGrant", id: random() < 0.2 ? 0 : leaseId, ttlMs: 100 + randInt(random, 500), now };
  } else if (roll < 0.84) {
    cmd = { op: "leaseKeepAlive", id: leaseId, now };
  } else if (roll < 0.88) {
    cmd = { op: "leaseRevoke", id: leaseId };
  } else if (roll < 0.96) {
    cmd = { op: "leaseExpire", ids: [leaseId, 1 + randInt(random, 6)], now };
  } else {
    cmd = { op: "leaseRefreshAll", now };
  }
  return { cmd, meta };
}

export { b };
