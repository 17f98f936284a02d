// Type test (`npm run typecheck`): the reference's examples type-check as written against the built
// package, the overloads resolve by `stream`, and what must not compile does not (@ts-expect-error fails
// the check if the line it covers compiles).
import Bastion, {
  type ChatCompletion,
  type ChatCompletionChunk,
  type ChatContentPart,
  type ChatMessage,
  type KeyStatus,
  type RequestRecord,
  type Stream,
  type TokenUsage,
  RateLimitError,
  reasoningOf,
} from "@qubittron/bastion-sdk";

declare const process: { env: Record<string, string | undefined>; stdout: { write(text: string): void } };

const client = new Bastion({ baseURL: "https://api.qubittron.ai/v1", apiKey: process.env.QUBITTRON_API_KEY });
const messages: ChatMessage[] = [{ role: "user", content: "Reply with exactly: ok" }];

export async function examples(): Promise<void> {
  const res = await client.chat.completions.create({ model: "gpt-oss-120b", messages, max_tokens: 16 });
  const completion: ChatCompletion = res;
  console.log(completion.choices[0]?.message.content);
  const usage: TokenUsage = res.usage;
  console.log(usage.total_tokens);

  const stream = await client.chat.completions.create({ model: "gpt-oss-120b", messages, stream: true });
  const typed: Stream<ChatCompletionChunk> = stream;
  for await (const chunk of typed) {
    process.stdout.write(chunk.choices[0]?.delta.content ?? "");
    process.stdout.write(reasoningOf(chunk.choices[0]?.delta) ?? "");
  }
  // @ts-expect-error a stream has no choices: the overload returned Stream<ChatCompletionChunk>
  console.log(stream.choices[0].message);

  // @ts-expect-error a ChatCompletion is not async-iterable
  for await (const chunk of res) console.log(chunk);

  const ac = new AbortController();
  setTimeout(() => ac.abort(), 30_000);
  await client.chat.completions.create({ model: "gpt-oss-120b", messages }, { signal: ac.signal });

  // Untyped OpenAI fields are accepted and sent as they are.
  await client.chat.completions.create({ model: "m", messages, tools: [], seed: 1, vendor_flag: true });

  // @ts-expect-error messages is required
  await client.chat.completions.create({ model: "m" });

  const text: string = await client.audio.transcriptions.create({ model: "w", file: new Blob([]), response_format: "text" });
  const json = await client.audio.transcriptions.create({ model: "w", file: new Uint8Array(4) });
  console.log(text, json.text);

  const { data, requestId, rateLimit } = await client.embeddings.create({ model: "bge-m3", input: "x" }).withResponse();
  console.log(data.data[0]?.embedding, requestId, rateLimit.remainingTokens);

  try {
    await client.models.list();
  } catch (error) {
    if (error instanceof RateLimitError) console.log(error.retryAfter, error.status, error.code);
  }

  // A response's message is the assistant's: its content is text (the openai package's everyday lines).
  process.stdout.write(res.choices[0]?.message.content ?? "");
  const first = res.choices[0];
  if (first && first.message.content !== null) console.log(first.message.content.toUpperCase());
  const exact: Equal<ChatCompletion["choices"][number]["message"]["content"], string | null> = true;
  // @ts-expect-error a response's content is never content parts (those are a request message's)
  const parts: ChatContentPart[] = res.choices[0]!.message.content!;
  const asked: ChatMessage = { role: "user", content: [{ type: "text", text: "hi" }] };
  console.log(exact, parts, asked, res._request_id, res._cost_usd);

  // The spend controls.
  const key: KeyStatus = await client.key.retrieve();
  const record: RequestRecord = await client.requests.retrieve(res._request_id ?? "");
  const cost: string = record.cost_usd;
  console.log(key.spend_usd, key.remaining_budget_usd, record.recovered, cost);
}

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
