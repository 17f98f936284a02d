// Chat completions against a real Bastion: JSON, streams, pass-through, the answer's request id and limits.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ThinkSplitter, reasoningOf } from "../dist/esm/index.js";
import { HELLO, client, requestId, upstreamSaw } from "./helpers.mjs";

test("the reference's non-streaming example", async () => {
  const res = await client().chat.completions.create({
    model: "m-echo",
    messages: [{ role: "user", content: "Reply with exactly: ok" }],
    max_tokens: 16,
  });
  assert.equal(res.object, "chat.completion");
  assert.equal(res.model, "m-echo");
  assert.equal(res.choices[0]?.message.content, "echo: Reply with exactly: ok");
  assert.equal(res.usage.total_tokens, 14);
  assert.match(res._request_id, /^req_/);
  assert.ok(!Object.keys(res).includes("_request_id")); // not part of the JSON
});

test("the reference's streaming example", async () => {
  const stream = await client().chat.completions.create({ model: "m-echo", messages: HELLO, stream: true });
  let text = "";
  const models = new Set();
  for await (const chunk of stream) {
    models.add(chunk.model);
    text += chunk.choices[0]?.delta.content ?? "";
  }
  assert.equal(text, "Hello world");
  assert.deepEqual([...models], ["m-echo"]);
  assert.match(stream.requestId, /^req_/);
  await assert.rejects(async () => {
    for await (const _ of stream) break;
  }, /consumed/);
});

test("fields the SDK does not type reach the upstream unchanged", async () => {
  const id = requestId("passthrough");
  const extra = {
    tools: [{ type: "function", function: { name: "f", parameters: { type: "object", properties: {} } } }],
    tool_choice: "auto",
    response_format: { type: "json_object" },
    seed: 7,
    vendor_extension: { nested: [1, 2.5, "x"] },
  };
  await client().chat.completions.create({ model: "m-echo", messages: HELLO, ...extra }, { headers: { "x-request-id": id } });
  const seen = await upstreamSaw(id);
  assert.equal(seen.count, 1);
  assert.deepEqual(seen.bodies[0], { model: "echo", messages: HELLO, ...extra });
});

test("withResponse gives the request id and the rate-limit headers", async () => {
  const id = requestId("with-response");
  const { data, response, requestId: seenId, rateLimit } = await client()
    .chat.completions.create({ model: "m-echo", messages: HELLO }, { headers: { "x-request-id": id } })
    .withResponse();
  assert.equal(data.choices[0]?.message.role, "assistant");
  assert.equal(seenId, id);
  assert.equal(response.status, 200);
  assert.equal(rateLimit.limitRequests, 1_000_000);
  assert.ok(rateLimit.remainingRequests > 0 && rateLimit.limitTokens > 0 && rateLimit.remainingTokens > 0);
  assert.match(rateLimit.resetRequests, /s$/);
  const raw = await client().chat.completions.create({ model: "m-echo", messages: HELLO }).asResponse();
  assert.equal((await raw.json()).object, "chat.completion");
});

test("reasoning channels: reasoning_content and reasoning deltas, inline think split across chunks", async () => {
  const reasoning = await client().chat.completions.create({ model: "m-reasoning", messages: HELLO, stream: true });
  let thought = "";
  let answer = "";
  for await (const chunk of reasoning) {
    const delta = chunk.choices[0]?.delta;
    thought += reasoningOf(delta) ?? "";
    answer += delta?.content ?? "";
  }
  assert.equal(thought, "Let me think.ovh-style");
  assert.equal(answer, "The answer");

  const think = await client().chat.completions.create({ model: "m-think", messages: HELLO, stream: true });
  const splitter = new ThinkSplitter();
  const parts = { reasoning: "", content: "" };
  for await (const chunk of think) {
    const part = splitter.push(chunk.choices[0]?.delta.content ?? "");
    parts.reasoning += part.reasoning;
    parts.content += part.content;
  }
  const tail = splitter.flush();
  assert.deepEqual({ reasoning: parts.reasoning + tail.reasoning, content: parts.content + tail.content }, {
    reasoning: "pondering",
    content: "The answer",
  });

  const whole = await client().chat.completions.create({ model: "m-reasoning", messages: HELLO });
  assert.equal(reasoningOf(whole.choices[0]?.message), "Let me think.");
});
