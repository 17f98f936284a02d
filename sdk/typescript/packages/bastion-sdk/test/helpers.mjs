// What every test file shares: the running Bastion (from test/run.mjs), clients, and the upstream's view.
import { randomBytes } from "node:crypto";
import Bastion from "../dist/esm/index.js";

if (!process.env.BASTION_SDK_STACK) throw new Error("run the tests with `npm test` (test/run.mjs)");
export const stack = JSON.parse(process.env.BASTION_SDK_STACK);
export const HELLO = [{ role: "user", content: "hi there" }];

export function client(options = {}) {
  return new Bastion({ baseURL: stack.baseURL, apiKey: stack.accounts.main.key, maxRetries: 0, ...options });
}

export function requestId(label) {
  return `sdk-${label}-${randomBytes(5).toString("hex")}`;
}

/** A fetch that counts its calls (the real one underneath). */
export function countingFetch() {
  const counted = (input, init) => {
    counted.calls += 1;
    return fetch(input, init);
  };
  counted.calls = 0;
  return counted;
}

async function control(path) {
  const response = await fetch(stack.control + path);
  return response.json();
}

/** What the upstream received with this x-request-id: { count, bodies }. */
export const upstreamSaw = (id) => control(`/requests?id=${encodeURIComponent(id)}`);
/** Whether the upstream saw the client side of this request close (waits up to `timeout` seconds). */
export const upstreamClosed = async (id, timeout = 5) =>
  (await control(`/closed?id=${encodeURIComponent(id)}&timeout=${timeout}`)).closed;
export const openGate = (id) => control(`/open-gate?id=${encodeURIComponent(id)}`);

/** The usage record of the request the client sent with x-request-id `id`, once the ledger has it. */
export async function usageRecord(account, id, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const response = await fetch(`${stack.root}/admin/v1/usage?account=${account}&limit=1000`, {
      headers: { authorization: `Bearer ${stack.adminToken}` },
    });
    const records = await response.json();
    const record = records.find((r) => r.client_request_id === id);
    if (record || Date.now() > deadline) return record;
    await new Promise((done) => setTimeout(done, 50));
  }
}
