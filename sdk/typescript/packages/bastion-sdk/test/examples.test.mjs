// The SDK reference's examples, as written there (only the client's construction is this stack's).
import assert from "node:assert/strict";
import { test } from "node:test";
import Bastion, { BastionError } from "@qubittron/bastion-sdk";
import { stack } from "./helpers.mjs";

const client = new Bastion({ baseURL: stack.baseURL, apiKey: stack.accounts.main.key });

/** Runs `example(console, process)` with both printing into a string (they shadow the globals there). */
async function printed(example) {
  let out = "";
  const console = { log: (...values) => (out += values.join(" ") + "\n") };
  const process = { stdout: { write: (text) => ((out += text), true) } };
  await example(console, process);
  return out;
}

test("non-streaming", async () => {
  const out = await printed(async (console, process) => {
    const res = await client.chat.completions.create({
      model: "gpt-oss-120b",
      messages: [{ role: "user", content: "Reply with exactly: ok" }],
      max_tokens: 16,
    });

    console.log(res.choices[0]?.message.content);
    console.log(res.usage.total_tokens);
  });
  const [content, tokens] = out.trim().split("\n");
  assert.equal(content, "ok");
  assert.ok(Number(tokens) > 0);
});

test("streaming", async () => {
  const out = await printed(async (console, process) => {
    const stream = await client.chat.completions.create({
      model: "gpt-oss-120b",
      messages: [{ role: "user", content: "Write a haiku about Canada." }],
      stream: true,
    });

    for await (const chunk of stream) {
      process.stdout.write(chunk.choices[0]?.delta.content ?? "");
    }
  });
  assert.ok(out.length > 0);
});

test("cancellation", async () => {
  const messages = [{ role: "user", content: "Reply with exactly: cancelled in time" }];
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), 30_000);

  const res = await client.chat.completions.create(
    { model: "gpt-oss-120b", messages },
    { signal: ac.signal },
  );
  clearTimeout(timer); // (not in the reference: the test's process should not wait the 30 s out)
  assert.equal(res.choices[0]?.message.content, "cancelled in time");
  ac.abort();
  await assert.rejects(client.chat.completions.create({ model: "gpt-oss-120b", messages }, { signal: ac.signal }), BastionError);
});
