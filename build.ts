// Builds the single binary: dist/raftkv (server and client in one file).
import { mkdirSync } from "node:fs";

mkdirSync("dist", { recursive: true });
const proc = Bun.spawnSync(
  [process.execPath, "build", "--compile", "--minify", "--sourcemap=none", "src/main.ts", "--outfile", "dist/raftkv"],
  { stdout: "inherit", stderr: "inherit" },
);
if (proc.exitCode !== 0) {
  console.error("build failed");
  process.exit(proc.exitCode ?? 1);
}
