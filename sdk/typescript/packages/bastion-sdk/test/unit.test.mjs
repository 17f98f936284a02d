// The pieces that need no server: SSE parsing, the reasoning helpers, error classes, the package itself.
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { test } from "node:test";
import Bastion, {
  APIConnectionError,
  APIError,
  AuthenticationError,
  BadRequestError,
  BastionError,
  InternalServerError,
  PermissionDeniedError,
  RateLimitError,
  SSEParser,
  ThinkSplitter,
  UpstreamError,
  reasoningOf,
  splitThink,
} from "../dist/esm/index.js";

const require = createRequire(import.meta.url);

const STREAM =
  'data: {"a":1}\r\n\r\n: keep-alive\r\n\r\ndata:{"b":"x\\ny"}\n\nevent: response.created\ndata: {"c":3}\n\n' +
  "data: line1\ndata: line2\r\rdata: [DONE]\n\n";
const EXPECTED = [
  { event: null, data: '{"a":1}', id: null },
  { event: null, data: '{"b":"x\\ny"}', id: null },
  { event: "response.created", data: '{"c":3}', id: null },
  { event: null, data: "line1\nline2", id: null },
  { event: null, data: "[DONE]", id: null },
];

test("SSE events are the same wherever the text is cut", () => {
  for (let cut = 0; cut <= STREAM.length; cut++) {
    const parser = new SSEParser();
    const events = [...parser.feed(STREAM.slice(0, cut)), ...parser.feed(STREAM.slice(cut)), ...parser.end()];
    assert.deepEqual(events, EXPECTED, `cut at ${cut}`);
  }
  const parser = new SSEParser();
  const one = [...STREAM].flatMap((char) => parser.feed(char)).concat(parser.end());
  assert.deepEqual(one, EXPECTED);
});

test("reasoningOf reads reasoning, then reasoning_content", () => {
  assert.equal(reasoningOf({ reasoning: "ovh", reasoning_content: "vllm" }), "ovh");
  assert.equal(reasoningOf({ reasoning_content: "vllm" }), "vllm");
  assert.equal(reasoningOf({ content: "x" }), undefined);
  assert.equal(reasoningOf(undefined), undefined);
});

test("splitThink separates inline think blocks from the answer", () => {
  assert.deepEqual(splitThink("<think>pondering</think>The answer"), { reasoning: "pondering", content: "The answer" });
  assert.deepEqual(splitThink("a<think>b</think>c<think>d</think>e"), { reasoning: "bd", content: "ace" });
  assert.deepEqual(splitThink("no tags < here"), { reasoning: "", content: "no tags < here" });
  assert.deepEqual(splitThink("<think>cut while thinking"), { reasoning: "cut while thinking", content: "" });
});

test("ThinkSplitter gives the same split whatever the chunking", () => {
  const text = "<think>let me see</think>The <b>answer</b> is <thin 42";
  for (let size = 1; size <= text.length; size++) {
    const splitter = new ThinkSplitter();
    let reasoning = "";
    let content = "";
    for (let at = 0; at < text.length; at += size) {
      const part = splitter.push(text.slice(at, at + size));
      reasoning += part.reasoning;
      content += part.content;
      assert.ok(!content.includes("<think"), `a tag leaked at size ${size}`);
    }
    const tail = splitter.flush();
    assert.deepEqual({ reasoning: reasoning + tail.reasoning, content: content + tail.content }, {
      reasoning: "let me see",
      content: "The <b>answer</b> is <thin 42",
    });
  }
});

test("a missing key is a clear error at construction; the environment supplies defaults", () => {
  const names = ["QUBITTRON_API_KEY", "BASTION_API_KEY", "QUBITTRON_BASE_URL", "BASTION_BASE_URL"];
  const saved = Object.fromEntries(names.map((name) => [name, process.env[name]]));
  try {
    for (const name of names) delete process.env[name];
    assert.throws(
      () => new Bastion(),
      (error) => error instanceof BastionError && /QUBITTRON_API_KEY/.test(error.message) && /BASTION_API_KEY/.test(error.message),
    );
    process.env.BASTION_API_KEY = "qbt_bastion_spelling";
    assert.equal(new Bastion().apiKey, "qbt_bastion_spelling");
    process.env.QUBITTRON_API_KEY = "qbt_from_env"; // the QUBITTRON_ spelling first
    process.env.BASTION_BASE_URL = "http://other.example/v1";
    process.env.QUBITTRON_BASE_URL = "http://gateway.example/v1/";
    const client = new Bastion();
    assert.equal(client.apiKey, "qbt_from_env");
    assert.equal(client.baseURL, "http://gateway.example/v1");
    assert.equal(client.url("/api/v1/tts/text_to_audio"), "http://gateway.example/api/v1/tts/text_to_audio");
    assert.equal(client.maxRetries, 2);
    delete process.env.QUBITTRON_BASE_URL;
    assert.equal(new Bastion().baseURL, "http://other.example/v1");
    process.env.QUBITTRON_BASE_URL = "gateway.example/v1";
    assert.throws(
      () => new Bastion(),
      (error) => error instanceof BastionError && /QUBITTRON_BASE_URL/.test(error.message) && /http:\/\//.test(error.message),
    );
  } finally {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
});

test("errors thrown by one build are instances of the other build's classes", () => {
  const cjs = require("@qubittron/bastion-sdk"); // the exports map's "require": dist/cjs
  assert.ok(require.resolve("@qubittron/bastion-sdk").endsWith("dist/cjs/index.js"));
  assert.notEqual(cjs.BadRequestError, BadRequestError); // two copies of the classes
  const fromCjs = new cjs.RateLimitError("slow down", { status: 429, headers: new Headers({ "retry-after": "3" }) });
  assert.ok(fromCjs instanceof RateLimitError && fromCjs instanceof APIError && fromCjs instanceof BastionError);
  assert.ok(!(fromCjs instanceof BadRequestError));
  assert.equal(fromCjs.retryAfter, 3);
  const fromEsm = new UpstreamError("down", { status: 502 });
  assert.ok(fromEsm instanceof cjs.UpstreamError && fromEsm instanceof cjs.BastionError);
  assert.ok(!(fromEsm instanceof cjs.InternalServerError));
  assert.ok(new APIConnectionError() instanceof cjs.BastionError);
  assert.ok(!({} instanceof BastionError) && !(new Error("x") instanceof BastionError));
  assert.equal(cjs.default, cjs.Bastion);
});

test("each class carries the envelope's fields", () => {
  const headers = new Headers({ "x-request-id": "req_1" });
  const error = new PermissionDeniedError("no credit", {
    status: 402,
    headers,
    error: { message: "no credit", type: "billing_error", code: "insufficient_funds", param: null },
  });
  assert.deepEqual(
    [error.status, error.code, error.type, error.param, error.message, error.requestId, error.name],
    [402, "insufficient_funds", "billing_error", null, "no credit", "req_1", "PermissionDeniedError"],
  );
  assert.ok(new InternalServerError("x") instanceof APIError);
  assert.ok(new AuthenticationError("x") instanceof BastionError);
});

test("the built package has no runtime dependency", () => {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
  assert.deepEqual([pkg.dependencies, pkg.peerDependencies, pkg.optionalDependencies], [undefined, undefined, undefined]);
  const files = (dir) =>
    readdirSync(dir).flatMap((name) => {
      const path = join(dir, name);
      return statSync(path).isDirectory() ? files(path) : /\.(js|d\.ts)$/.test(path) ? [path] : [];
    });
  for (const path of files(new URL("../dist", import.meta.url).pathname)) {
    const source = readFileSync(path, "utf8").replace(/\/\*[\s\S]*?\*\//g, ""); // comments may show imports
    const specifiers = [...source.matchAll(/(?:from\s+|require\()\s*["']([^"']+)["']/g)].map((m) => m[1]);
    for (const specifier of specifiers) assert.ok(specifier.startsWith("."), `${path} imports ${specifier}`);
  }
});
