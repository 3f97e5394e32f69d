// Majority counting over the voters of a configuration: commit index, elections, liveness.
// Learners and non-members are never counted.

import type { NodeId } from "./types";

export function majority(voters: number): number {
  return Math.floor(voters / 2) + 1;
}

/** The highest index that a majority of `voters` hold, by `match` (0 when there are no voters). */
export function committedIndex(voters: readonly NodeId[], match: (id: NodeId) => number): number {
  if (voters.length === 0) return 0;
  const matches = voters.map(match).sort((a, b) => b - a);
  return matches[majority(voters.length) - 1]!;
}

export type VoteResult = "won" | "lost" | "pending";

/** The outcome of an election among `voters` given the answers so far; answers of non-voters are ignored. */
export function voteResult(voters: readonly NodeId[], votes: ReadonlyMap<NodeId, boolean>): VoteResult {
  let granted = 0;
  let rejected = 0;
  for (const v of voters) {
    const g = votes.get(v);
    if (g === true) granted++;
    else if (g === false) rejected++;
  }
  const need = majority(voters.length);
  if (granted >= need) return "won";
  if (rejected >= need || voters.length - rejected < need) return "lost";
  return "pending";
}

/** Whether a majority of `voters` satisfy `ok`. */
export function hasQuorum(voters: readonly NodeId[], ok: (id: NodeId) => boolean): boolean {
  let n = 0;
  for (const v of voters) if (ok(v)) n++;
  return voters.length > 0 && n >= majority(voters.length);
}
