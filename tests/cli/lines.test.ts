// streamLines: the line splitter `cluster` (node output) and bench/heartbeat-gap.ts share.

import { expect, test } from "bun:test";
import { streamLines } from "../../src/cli/common";

function streamOf(...chunks: string[]): ReadableStream<Uint8Array> {
  const te = new TextEncoder();
  return new ReadableStream({
    start(c) {
      for (const chunk of chunks) c.enqueue(te.encode(chunk));
      c.close();
    },
  });
}

test("lines split across chunks are joined; the last line without a newline is kept", async () => {
  const got: string[] = [];
  for await (const line of streamLines(streamOf("ready\nre", "port\n\nst", "op"))) got.push(line);
  expect(got).toEqual(["ready", "report", "", "stop"]);
});

test("a multi-byte character split between chunks is decoded whole", async () => {
  const bytes = new TextEncoder().encode("é\n");
  const s = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(bytes.slice(0, 1));
      c.enqueue(bytes.slice(1));
      c.close();
    },
  });
  const got: string[] = [];
  for await (const line of streamLines(s)) got.push(line);
  expect(got).toEqual(["é"]);
});
