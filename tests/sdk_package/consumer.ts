// A new user's project: the SDK installed from its packed tarball, the seed reference's examples and the
// everyday lines of `openai` code, compiled by this project's own tsc (strict), then run against a real
// `bastion serve`. Each outcome is printed as one JSON line for tests/test_typescript_sdk_package.py.
import Bastion, {
  APIUserAbortError,
  AuthenticationError,
  NotFoundError,
  type ChatChoice,
  type ChatCompletion,
  type ChatMessage,
  type KeyStatus,
  type RequestRecord,
  type TokenUsage,
} from "@qubittron/bastion-sdk";

declare const process: {
  env: Record<string, string | undefined>;
  stdout: { write(text: string): boolean };
  exitCode?: number;
};

// Fails to compile the day a response message's content is no longer exactly `string | null`.
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const contentIsText: Equal<ChatCompletion["choices"][number]["message"]["content"], string | null> = true;
const choiceIsTheSame: Equal<ChatChoice, ChatCompletion["choices"][number]> = true;

const client = new Bastion({ baseURL: process.env.QUBITTRON_BASE_URL, apiKey: process.env.QUBITTRON_API_KEY });
const messages: ChatMessage[] = [{ role: "user", content: "Write a haiku about Canada." }];

function say(label: string, value: unknown): void {
  process.stdout.write(`\n${JSON.stringify({ [label]: value })}\n`);
}

async function record(id: string): Promise<RequestRecord> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await client.requests.retrieve(id);
    } catch (error) {
      if (!(error instanceof NotFoundError) || attempt > 100) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

async function main(): Promise<void> {
  say("types", [contentIsText, choiceIsTheSame]);

  // The reference's non-streaming example, as written.
  const res = await client.chat.completions.create({
    model: "gpt-oss-120b",
    messages: [{ role: "user", content: "Reply with exactly: ok" }],
    max_tokens: 16,
  });
  console.log(res.choices[0]?.message.content);
  console.log(res.usage.total_tokens);
  // Everyday lines of openai code.
  process.stdout.write(res.choices[0]?.message.content ?? "");
  const first = res.choices[0];
  if (first !== undefined && first.message.content !== null) say("upper", first.message.content.toUpperCase());
  const usage: TokenUsage = res.usage;
  say("answer", { content: res.choices[0]?.message.content, total: usage.total_tokens });
  say("meta", { request_id: res._request_id, cost_usd: res._cost_usd });

  // The reference's streaming example, as written.
  const stream = await client.chat.completions.create({
    model: "gpt-oss-120b",
    messages: [{ role: "user", content: "Write a haiku about Canada." }],
    stream: true,
  });
  for await (const chunk of stream) {
    process.stdout.write(chunk.choices[0]?.delta.content ?? "");
  }
  say("stream_ended", stream.requestId);

  // Cancellation: an abort mid-stream throws.
  const ac = new AbortController();
  const slow = await client.chat.completions.create(
    { model: "slow-model", messages, stream: true },
    { signal: ac.signal, headers: { "x-request-id": "sdk-package-aborted" } },
  );
  try {
    for await (const chunk of slow) {
      if (chunk.choices[0]?.delta.content) ac.abort();
    }
    say("abort", "not thrown");
  } catch (error) {
    say("abort", error instanceof APIUserAbortError ? "APIUserAbortError" : String(error));
  }

  // An invalid key.
  try {
    await new Bastion({ baseURL: process.env.QUBITTRON_BASE_URL, apiKey: "qbt_not_a_key" }).models.list();
    say("invalid_key", "not thrown");
  } catch (error) {
    say("invalid_key", error instanceof AuthenticationError ? [error.name, error.status] : String(error));
  }

  // The spend controls: the streamed request's record, then (every request settled) the key.
  const streamed: RequestRecord = await record(stream.requestId ?? "");
  await record("sdk-package-aborted");
  say("record", streamed);
  const key: KeyStatus = await client.key.retrieve();
  say("key", key);
}

main().catch((error: unknown) => {
  say("failed", String(error));
  process.exitCode = 1;
});
