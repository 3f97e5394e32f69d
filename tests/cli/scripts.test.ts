// npm scripts must run files that exist (`npm run bench` once pointed at a file that did not).

import { expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";

const root = resolve(import.meta.dir, "../..");

test("every file an npm script runs exists", () => {
  const scripts = JSON.parse(readFileSync(resolve(root, "package.json"), "utf8")).scripts as Record<string, string>;
  const files = Object.values(scripts).flatMap((cmd) => cmd.split(/\s+/).filter((w) => /\.(ts|js|sh)$/.test(w)));
  expect(files).toContain("bench/figures.ts");
  for (const f of files) expect(existsSync(resolve(root, f))).toBe(true);
});
