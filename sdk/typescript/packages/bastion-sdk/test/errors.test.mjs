// Every error class from a real Bastion answer, and the retries (counted at the fetch and upstream).
import assert from "node:assert/strict";
import { test } from "node:test";
import Bastion, {
  APIConnectionError,
  APIConnectionTimeoutError,
  AuthenticationError,
  BadRequestError,
  BastionError,
  PermissionDeniedError,
  RateLimitError,
  UpstreamError,
} from "../dist/esm/index.js";
import { HELLO, client, countingFetch, requestId, stack, upstreamSaw } from "./helpers.mjs";

const keyed = (name, options = {}) => client({ apiKey: stack.accounts[name].key, ...options });

test("a bad body is a BadRequestError naming the field", async () => {
  await assert.rejects(client().chat.completions.create({ model: "m-echo" }), (error) => {
    assert.ok(error instanceof BadRequestError && error instanceof BastionError);
    assert.deepEqual([error.status, error.code, error.param], [400, "invalid_request", "messages"]);
    assert.match(error.requestId, /^req_/);
    return true;
  });
});

test("a bad key is an AuthenticationError", async () => {
  await assert.rejects(client({ apiKey: "qbt_not_a_key" }).models.list(), (error) => {
    assert.ok(error instanceof AuthenticationError);
    assert.deepEqual([error.status, error.code, error.type], [401, "invalid_api_key", "authentication_error"]);
    return true;
  });
});

test("exhausted credit is a PermissionDeniedError, never retried", async () => {
  const counted = countingFetch();
  await assert.rejects(keyed("broke", { maxRetries: 2, fetch: counted }).chat.completions.create({ model: "m-echo", messages: HELLO }), (error) => {
    assert.ok(error instanceof PermissionDeniedError);
    assert.deepEqual([error.status, error.code, error.type], [402, "insufficient_funds", "billing_error"]);
    assert.equal(error.headers.get("x-should-retry"), "false");
    return true;
  });
  assert.equal(counted.calls, 1);
});

test("a rate limit is a RateLimitError with retryAfter", async () => {
  const limited = keyed("limited");
  await limited.chat.completions.create({ model: "m-echo", messages: HELLO }); // the one request of the minute
  await assert.rejects(limited.chat.completions.create({ model: "m-echo", messages: HELLO }), (error) => {
    assert.ok(error instanceof RateLimitError);
    assert.deepEqual([error.status, error.code], [429, "rate_limit_exceeded"]);
    assert.ok(error.retryAfter > 0 && error.retryAfter <= 60, String(error.retryAfter));
    return true;
  });
});

test("a dead upstream is an UpstreamError, retried twice (counted upstream and at the fetch)", async () => {
  const id = requestId("retried");
  const counted = countingFetch();
  const started = Date.now();
  await assert.rejects(
    client({ maxRetries: 2, fetch: counted }).chat.completions.create({ model: "m-error500", messages: HELLO }, { headers: { "x-request-id": id } }),
    (error) => error instanceof UpstreamError && error.status === 502 && error.code === "upstream_error",
  );
  assert.equal(counted.calls, 3);
  assert.equal((await upstreamSaw(id)).count, 3);
  assert.ok(Date.now() - started >= 0.5 * 0.75 * 1000 * 3, "backoff between attempts"); // 0.5 s then 1 s, less jitter
  await assert.rejects(client().chat.completions.create({ model: "refused-model", messages: HELLO }), UpstreamError);
});

test("Bastion not there is an APIConnectionError, after its retries", async () => {
  const counted = countingFetch();
  const dead = new Bastion({ baseURL: stack.deadURL, apiKey: "qbt_x", maxRetries: 1, fetch: counted });
  await assert.rejects(dead.models.list(), (error) => error instanceof APIConnectionError && !(error instanceof APIConnectionTimeoutError));
  assert.equal(counted.calls, 2);
});

test("no answer within the timeout is an APIConnectionTimeoutError", async () => {
  const started = Date.now();
  await assert.rejects(
    client({ timeout: 300 }).chat.completions.create({ model: "m-hang", messages: HELLO }),
    APIConnectionTimeoutError,
  );
  assert.ok(Date.now() - started < 3000);
});

test("an error event mid-stream throws the matching class, and a stream that began is not retried", async () => {
  // The upstream sends a first chunk, then nothing: Bastion's read timeout ends the stream with an error event.
  const counted = countingFetch();
  const stream = await client({ maxRetries: 2, fetch: counted }).chat.completions.create({
    model: "fast-hang-after-first",
    messages: HELLO,
    stream: true,
  });
  const received = [];
  await assert.rejects(async () => {
    for await (const chunk of stream) received.push(chunk.choices[0]?.delta.content ?? "");
  }, (error) => {
    assert.ok(error instanceof UpstreamError, error.name);
    assert.equal(error.code, "upstream_error");
    return true;
  });
  assert.ok(received.join("").includes("first"));
  assert.equal(counted.calls, 1);
});

/** A fetch that answers `answers` first (synthetic: to steer the retry policy), then the real fetch. */
function scripted(...answers) {
  const calls = [];
  const fake = (input, init) => {
    calls.push(Date.now());
    const next = answers.shift();
    return next ? Promise.resolve(next()) : fetch(input, init);
  };
  fake.calls = calls;
  return fake;
}

test("the retry policy honours retry-after-ms, Retry-After and x-should-retry", async () => {
  const envelope = (code) => JSON.stringify({ error: { message: code, type: "t", code, param: null } });
  const waits = scripted(
    () => new Response(envelope("rate_limit_exceeded"), { status: 429, headers: { "retry-after-ms": "300" } }),
    () => new Response(envelope("upstream_error"), { status: 503, headers: { "retry-after": "0.2" } }),
  );
  const answer = await client({ maxRetries: 2, fetch: waits }).chat.completions.create({ model: "m-echo", messages: HELLO });
  assert.equal(answer.model, "m-echo"); // the third attempt is the real one
  const [first, second, third] = waits.calls;
  assert.ok(second - first >= 290 && second - first < 1000, `waited ${second - first} ms for retry-after-ms`);
  assert.ok(third - second >= 190 && third - second < 1000, `waited ${third - second} ms for Retry-After`);

  const told = scripted(() => new Response(envelope("invalid_request"), { status: 400, headers: { "x-should-retry": "true", "retry-after": "0" } }));
  await client({ maxRetries: 1, fetch: told }).models.list();
  assert.equal(told.calls.length, 2); // a 400 Bastion says to retry is retried
  const refused = scripted(() => new Response(envelope("upstream_error"), { status: 502, headers: { "x-should-retry": "false" } }));
  await assert.rejects(client({ maxRetries: 2, fetch: refused }).models.list(), UpstreamError);
  assert.equal(refused.calls.length, 1);
});
