// `npm test`: starts a real Bastion (tests/sdk_stack.py: the mock upstream, `bastion serve`, accounts and
// keys), runs every *.test.mjs here with Node's test runner against it, and stops it.
import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { createInterface } from "node:readline";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../../../../..");
const python = process.env.PYTHON ?? "python";
const stack = spawn(python, [join(repo, "tests/sdk_stack.py")], {
  cwd: repo,
  stdio: ["pipe", "pipe", "inherit"],
});
const described = await new Promise((resolveLine, reject) => {
  const lines = createInterface({ input: stack.stdout });
  lines.once("line", resolveLine);
  stack.once("exit", (code) => reject(new Error(`tests/sdk_stack.py exited with ${code} before starting`)));
});

const files = readdirSync(here)
  .filter((name) => name.endsWith(".test.mjs") || name.endsWith(".test.cjs"))
  .sort()
  .map((name) => join(here, name));
const only = process.argv.slice(2);
const tests = spawn(process.execPath, ["--test", "--test-concurrency=1", ...(only.length ? only : files)], {
  stdio: "inherit",
  env: { ...process.env, BASTION_SDK_STACK: described },
});
const code = await new Promise((done) => tests.once("exit", (status) => done(status ?? 1)));
stack.stdin.end(); // the stack stops when its stdin closes
await new Promise((done) => stack.once("exit", done));
process.exit(code);
