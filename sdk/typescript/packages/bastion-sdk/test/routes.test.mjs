// Every route of the client against a real Bastion and the mock upstream.
import assert from "node:assert/strict";
import { createReadStream, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { AudioEncoding, NotFoundError } from "../dist/esm/index.js";
import { client, requestId, upstreamSaw } from "./helpers.mjs";

const AUDIO = new Uint8Array(64_000).map((_, i) => i % 256); // 2 s at the mock's 32,000 bytes per second

test("completions: JSON and streamed", async () => {
  const completion = await client().completions.create({ model: "m-echo", prompt: "Say hi", max_tokens: 5 });
  assert.equal(completion.object, "text_completion");
  assert.equal(completion.model, "m-echo");
  assert.ok(completion.choices[0]?.text.length > 0);
  const stream = await client().completions.create({ model: "m-echo", prompt: "Say hi", stream: true });
  let text = "";
  for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
  assert.ok(text.length > 0);
});

test("embeddings: floats and base64", async () => {
  const floats = await client().embeddings.create({ model: "bge-m3", input: ["one", "two"] });
  assert.equal(floats.data.length, 2);
  assert.ok(Array.isArray(floats.data[0]?.embedding));
  const base64 = await client().embeddings.create({ model: "bge-m3", input: "one", encoding_format: "base64" });
  assert.equal(typeof base64.data[0]?.embedding, "string");
  assert.ok(base64.usage.prompt_tokens > 0);
});

test("images.generate", async () => {
  const images = await client().images.generate({ model: "img", prompt: "a lighthouse", n: 2, response_format: "b64_json" });
  assert.equal(images.data.length, 2);
  assert.ok(images.data.every((image) => typeof image.b64_json === "string"));
});

test("audio.transcriptions: bytes, a Blob and a Node stream, JSON and text formats", async () => {
  const id = requestId("transcribe");
  const verbose = await client().audio.transcriptions.create(
    { model: "whisper", file: AUDIO, filename: "speech.wav", response_format: "verbose_json", language: "en" },
    { headers: { "x-request-id": id } },
  );
  assert.equal(verbose.duration, 2);
  assert.equal(typeof verbose.text, "string");
  const seen = await upstreamSaw(id);
  assert.equal(seen.count, 1);

  const blob = await client().audio.transcriptions.create({ model: "whisper", file: new Blob([AUDIO]) });
  assert.equal(typeof blob.text, "string");

  const dir = mkdtempSync(join(tmpdir(), "bastion-sdk-"));
  writeFileSync(join(dir, "speech.wav"), AUDIO);
  const text = await client().audio.transcriptions.create({
    model: "whisper",
    file: createReadStream(join(dir, "speech.wav")),
    response_format: "text",
  });
  assert.equal(typeof text, "string");
  assert.ok(text.length > 0);
});

test("responses: stateless by default, JSON and its event stream", async () => {
  const id = requestId("responses");
  const response = await client().responses.create({ model: "m-echo", input: "hi" }, { headers: { "x-request-id": id } });
  assert.equal(response.object, "response");
  assert.equal((await upstreamSaw(id)).bodies[0].store, false);
  const stream = await client().responses.create({ model: "m-echo", input: "hi", stream: true });
  const types = [];
  for await (const event of stream) types.push(event.type);
  assert.ok(types.length > 1, types.join());
  assert.ok(types.at(-1).startsWith("response."), types.join());
});

test("models: list (awaited and iterated) and retrieve", async () => {
  const page = await client().models.list();
  assert.equal(page.object, "list");
  const ids = page.data.map((model) => model.id);
  assert.ok(ids.includes("m-echo") && ids.includes("whisper"));
  const iterated = [];
  for await (const model of client().models.list()) iterated.push(model.id);
  assert.deepEqual(iterated, ids);
  const model = await client().models.retrieve("bge-m3");
  assert.deepEqual([model.id, model.object, model.category, model.endpoints], ["bge-m3", "model", "Embedding", ["embeddings"]]);
  await assert.rejects(client().models.retrieve("no-such-model"), (error) => error instanceof NotFoundError && error.code === "model_not_found");
});

test("tts.textToAudio: Riva's route, the audio bytes and their type", async () => {
  const speech = await client().tts.textToAudio({
    text: "Hello from Bastion",
    language_code: "en-US",
    voice_name: "English-US.Female-1",
    sample_rate_hz: 16000,
    encoding: AudioEncoding.LINEAR_PCM,
  });
  assert.match(speech.contentType, /^audio\//);
  assert.ok(speech.audio.length > 44);
  assert.equal(new TextDecoder().decode(speech.audio.slice(0, 4)), "RIFF");
  assert.match(speech.requestId, /^req_/);
});
