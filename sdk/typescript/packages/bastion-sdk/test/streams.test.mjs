// Leaving a stream early: break, the caller's AbortSignal, stream.controller. Each must close the
// connection so Bastion closes the upstream's, and the part produced is billed.
import assert from "node:assert/strict";
import { test } from "node:test";
import { APIUserAbortError } from "../dist/esm/index.js";
import { HELLO, client, requestId, stack, upstreamClosed, usageRecord } from "./helpers.mjs";

async function slowStream(id, options = {}) {
  return client().chat.completions.create({ model: "m-slow", messages: HELLO, stream: true }, { headers: { "x-request-id": id }, ...options });
}

async function assertBilledPartially(id) {
  assert.equal(await upstreamClosed(id), true, "the upstream saw the stream closed");
  const record = await usageRecord(stack.accounts.main.id, id);
  assert.ok(record, "a usage record");
  assert.equal(record.status, 499);
  assert.ok(record.completion_tokens > 0 && record.cost_nano > 0, JSON.stringify(record));
}

test("break out of for await closes the stream", async () => {
  const id = requestId("break");
  const stream = await slowStream(id);
  let ticks = 0;
  for await (const chunk of stream) {
    if ((chunk.choices[0]?.delta.content ?? "").startsWith("tick")) ticks += 1;
    if (ticks === 3) break;
  }
  assert.equal(ticks, 3);
  await assertBilledPartially(id);
});

test("the caller's AbortSignal ends a stream mid-way", async () => {
  const id = requestId("signal");
  const controller = new AbortController();
  const stream = await slowStream(id, { signal: controller.signal });
  let ticks = 0;
  await assert.rejects(async () => {
    for await (const chunk of stream) {
      if ((chunk.choices[0]?.delta.content ?? "").startsWith("tick") && ++ticks === 2) controller.abort();
    }
  }, APIUserAbortError);
  await assertBilledPartially(id);
});

test("stream.controller.abort() ends it too", async () => {
  const id = requestId("controller");
  const stream = await slowStream(id);
  let ticks = 0;
  await assert.rejects(async () => {
    for await (const chunk of stream) {
      if ((chunk.choices[0]?.delta.content ?? "").startsWith("tick") && ++ticks === 2) stream.controller.abort();
    }
  }, APIUserAbortError);
  await assertBilledPartially(id);
});

test("an abort before the answer rejects the call and closes the upstream's request", async () => {
  const id = requestId("early-abort");
  const controller = new AbortController();
  const call = client().chat.completions.create(
    { model: "m-hang", messages: HELLO },
    { signal: controller.signal, headers: { "x-request-id": id } },
  );
  setTimeout(() => controller.abort(), 300);
  await assert.rejects(call, APIUserAbortError);
  assert.equal(await upstreamClosed(id), true);
});
