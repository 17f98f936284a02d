// Builds one package twice with tsc, as ESM (dist/esm) and CommonJS (dist/cjs), each with its .d.ts files,
// and marks each directory's module format so Node reads it right whatever the package's own "type".
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const require = createRequire(import.meta.url);
const tsc = require.resolve("typescript/bin/tsc");
const dir = process.cwd();
rmSync(join(dir, "dist"), { recursive: true, force: true });
for (const [config, out, type] of [
  ["tsconfig.esm.json", "dist/esm", "module"],
  ["tsconfig.cjs.json", "dist/cjs", "commonjs"],
]) {
  execFileSync(process.execPath, [tsc, "-p", config], { cwd: dir, stdio: "inherit" });
  mkdirSync(join(dir, out), { recursive: true });
  writeFileSync(join(dir, out, "package.json"), JSON.stringify({ type }) + "\n");
}
