"""Refused requests are counted, not recorded, on both stacks: 402s, 429s and requests that fail
validation before admission add to the live state's counters (`GET /v1/key`: `refused_today`,
`last_refusal`) and, through the ledger writer, to `refusals_daily` per day, key and code; none of them
writes a usage record, and the access line of a refused request names no upstream.

Test prices (tests/conftest.py): $1 / $2 per 1M tokens in / out; the mock upstream reports 11 prompt and
3 completion tokens, so a served chat completion costs 17,000 nano-USD.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from dashboard_client import person
from stacks import Stack, poll

from bastion.billing.live import LiveState, RedisLive
from bastion.billing.memory_live import MemoryLive
from bastion.db.refusals import RefusalTally
from bastion.db.store import Store

USD = 10**9
HELLO = [{"role": "user", "content": "hi"}]


def chat(base_url: str, key: str, **body: Any) -> httpx.Response:
    payload = {"model": "m-echo", "messages": HELLO, "max_tokens": 10, **body}
    return httpx.post(
        base_url + "/chat/completions", json=payload, headers={"Authorization": f"Bearer {key}"}
    )


def key_info(stack: Stack, key: str) -> dict[str, Any]:
    answer = httpx.get(stack.gateway.base_url + "/key", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    info: dict[str, Any] = answer.json()
    return info


def counted(stack: Stack, account_id: str) -> dict[str, int]:
    """What the database holds for the account today, per code (the ledger writer's work)."""
    today = datetime.now(UTC).date()

    async def read(store: Store) -> dict[str, int]:
        return await store.refusals.summary(account_id, today, today)

    return dict(stack.with_store(read))


def wait_counted(stack: Stack, account_id: str, expected: dict[str, int]) -> dict[str, int]:
    found = poll(lambda: (c := counted(stack, account_id)) == expected and c, timeout=10, step=0.1)
    return found or counted(stack, account_id)


async def hammer(base_url: str, key: str, requests: int, concurrency: int = 16) -> list[int]:
    """`requests` chat completions on one key, `concurrency` at a time: their statuses."""
    statuses: list[int] = []
    body = {"model": "m-echo", "messages": HELLO, "max_tokens": 10}
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def worker(count: int) -> None:
            for _ in range(count):
                answer = await client.post("/chat/completions", json=body, headers=headers)
                statuses.append(answer.status_code)

        share, extra = divmod(requests, concurrency)
        await asyncio.gather(*(worker(share + (i < extra)) for i in range(concurrency)))
    return statuses


def test_2000_refusals_are_counted_and_write_no_usage_record(stack: Stack) -> None:
    # An account with no credit: every request is refused at admission (402 insufficient_funds).
    account_id, key_id, key = stack.account(0, rpm=1_000_000, tpm=100_000_000)
    statuses = asyncio.run(hammer(stack.gateway.base_url, key, 2000))
    assert statuses == [402] * 2000

    info = key_info(stack, key)
    assert info["refused_today"] == 2000
    assert info["last_refusal"]["code"] == "insufficient_funds"
    at = datetime.fromisoformat(info["last_refusal"]["at"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - at).total_seconds()) < 60

    assert wait_counted(stack, account_id, {"insufficient_funds": 2000}) == {"insufficient_funds": 2000}
    assert stack.records(account_id) == []  # not one usage record for 2,000 refusals
    assert stack.balance(account_id) == 0

    # The account's owner sees them: on the overview, in the usage page's refusals, on the key's row.
    owner = person(stack, "--account", account_id, "--role", "owner")
    try:
        overview = owner.page(f"/dashboard/a/{account_id}/").text
        assert 'data-refused="2000"' in overview
        assert 'data-refused-code="insufficient_funds" data-count="2000"' in overview
        failed = owner.page(f"/dashboard/a/{account_id}/usage", status="error").text
        assert "No requests match." in failed and 'data-refused-note="2000"' in failed
        refusals = owner.page(f"/dashboard/a/{account_id}/usage", status="refused").text
        assert (
            f'data-refusal-key="{key_id}" data-refusal-code="insufficient_funds" data-count="2000"'
            in refusals
        )
        keys = owner.page(f"/dashboard/a/{account_id}/keys").text
        assert 'data-last-refusal="insufficient_funds"' in keys
    finally:
        owner.close()


def test_every_kind_of_refusal_is_counted_under_its_code(stack: Stack) -> None:
    # A budget of 30,000 nano-USD: the first request (reserving ~25,000) fits, the next one does not.
    account_id, _, key = stack.account(
        USD, rpm=1_000_000, tpm=100_000_000, budget_nano=30_000, budget_period="total", models=["m-echo"]
    )
    base = stack.gateway.base_url
    assert chat(base, key).status_code == 200
    assert chat(base, key).json()["error"]["code"] == "key_budget_exceeded"
    assert chat(base, key, model="m-think").json()["error"]["code"] == "model_not_found"  # not allowed
    assert chat(base, key, model="no-such-model").json()["error"]["code"] == "model_not_found"
    assert chat(base, key, messages="hi").json()["error"]["code"] == "invalid_request"
    no_json = httpx.post(base + "/chat/completions", content=b"{", headers={"Authorization": f"Bearer {key}"})
    assert no_json.json()["error"]["code"] == "invalid_request"

    expected = {"invalid_request": 2, "model_not_found": 2, "key_budget_exceeded": 1}
    assert wait_counted(stack, account_id, expected) == expected
    info = key_info(stack, key)
    assert (info["refused_today"], info["last_refusal"]["code"]) == (5, "invalid_request")
    assert len(stack.records(account_id)) == 1  # only the request that was served

    # Neither the key's own routes nor an unknown model's page count as refusals.
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(base + "/models/no-such-model", headers=headers).status_code == 404
    assert key_info(stack, key)["refused_today"] == 5

    # Rate and concurrency limits: one request per minute, so the second is a 429.
    limited_account, _, limited_key = stack.account(USD, rpm=1, tpm=100_000_000)
    assert chat(base, limited_key).status_code == 200
    limited = chat(base, limited_key)
    assert (limited.status_code, limited.json()["error"]["code"]) == (429, "rate_limit_exceeded")
    assert wait_counted(stack, limited_account, {"rate_limit_exceeded": 1}) == {"rate_limit_exceeded": 1}
    assert key_info(stack, limited_key)["last_refusal"]["code"] == "rate_limit_exceeded"


def test_the_access_line_of_a_refused_request_names_no_upstream(stack: Stack) -> None:
    _, _, key = stack.account(0, rpm=1_000_000, tpm=100_000_000)
    refused = chat(stack.gateway.base_url, key, model="mock-model")
    assert refused.status_code == 402
    request_id = refused.headers["x-request-id"]

    def line() -> dict[str, Any] | None:
        for text in stack.gateway.log_text().splitlines():
            if request_id in text and text.startswith("{"):
                entry: dict[str, Any] = json.loads(text)
                if entry.get("request_id") == request_id and "status" in entry:
                    return entry
        return None

    entry = poll(line, timeout=5)
    assert entry is not None, "no access line for the refused request"
    assert (entry["status"], entry["error"], entry["model"]) == (402, "insufficient_funds", "mock-model")
    assert entry["upstream"] is None


def test_a_fresh_key_has_no_refusals(stack: Stack) -> None:
    _, _, key = stack.account(USD, rpm=1_000_000, tpm=100_000_000)
    info = key_info(stack, key)
    assert (info["refused_today"], info["last_refusal"]) == (0, None)


@pytest.fixture(params=["memory", "redis"])
async def live(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        yield MemoryLive()
        return
    from provision import REDIS_URL
    from stacks import delete_redis_keys

    prefix = f"test-refusals-{id(request)}:"
    state = await RedisLive.connect(REDIS_URL, prefix)
    try:
        yield state
    finally:
        await state.close()
        delete_redis_keys(REDIS_URL, prefix)


async def test_tallies_taken_for_a_failed_write_are_given_back(live: LiveState) -> None:
    for code in ("invalid_request", "invalid_request", "model_not_found"):
        await live.peek("key_a", "acct_a", 60, 1000, refused=code)
    await live.peek("key_b", "acct_b", 60, 1000, refused="invalid_request")
    await live.peek("key_b", "acct_b", 60, 1000)  # a read that counts nothing

    def summed(tallies: list[RefusalTally]) -> dict[tuple[str, str], int]:
        return {(t.key_id, t.code): t.count for t in tallies}

    taken = await live.take_refusals()
    assert summed(taken) == {
        ("key_a", "invalid_request"): 2,
        ("key_a", "model_not_found"): 1,
        ("key_b", "invalid_request"): 1,
    }
    assert all(t.day == datetime.now(UTC).date() for t in taken)
    assert await live.take_refusals() == []  # taken means gone
    # The database write failed: they go back, and add to what was counted meanwhile.
    await live.peek("key_a", "acct_a", 60, 1000, refused="invalid_request")
    await live.return_refusals(taken)
    again = await live.take_refusals()
    assert summed(again) == {
        ("key_a", "invalid_request"): 3,
        ("key_a", "model_not_found"): 1,
        ("key_b", "invalid_request"): 1,
    }
    latest = {t.key_id: t.last_at for t in again}
    assert latest["key_a"] >= max(t.last_at for t in taken if t.key_id == "key_a")
