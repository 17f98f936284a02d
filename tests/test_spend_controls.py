"""Spend controls per key, on both stacks: budgets with periods, requests in flight, changes that apply
at the next request, and what a key can ask about itself (`GET /v1/key`).

Test prices (tests/conftest.py): $1 / $2 per 1M tokens in / out; the mock upstream reports 11 prompt and
3 completion tokens, so a request costs 17,000 nano-USD.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import openai
import redis
from stacks import Stack, poll

from bastion.money import decimal_usd

USD = 10**9
ONE_REQUEST = 17_000
HELLO = [{"role": "user", "content": "hi"}]


def keyed(stack: Stack, **options: object) -> tuple[str, str, str]:
    """A rich account and a key with these options (created through the CLI's store operation)."""
    return stack.account(USD, rpm=1_000_000, tpm=100_000_000, **options)


def chat(base_url: str, key: str, **extra: object) -> httpx.Response:
    body = {"model": "m-echo", "messages": HELLO, "max_tokens": 10, **extra}
    return httpx.post(base_url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})


def key_info(base_url: str, key: str) -> dict[str, object]:
    answer = httpx.get(base_url + "/key", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    info: dict[str, object] = answer.json()
    return info


def test_40_concurrent_requests_never_take_a_key_past_its_budget(stack: Stack) -> None:
    budget = 4 * ONE_REQUEST
    account_id, _, key = keyed(stack, budget_nano=budget, budget_period="total")

    async def burst() -> list[object]:
        client = stack.aclient(key)
        calls = [
            client.chat.completions.create(model="m-echo", messages=HELLO, max_tokens=10) for _ in range(40)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(burst())
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, openai.APIStatusError) and r.status_code == 402 for r in refused), refused[:3]
    assert {r.code for r in refused} == {"key_budget_exceeded"}  # type: ignore[attr-defined]
    records = stack.wait_records(account_id, len(admitted))
    spent = sum(r.cost_nano for r in records)
    assert 1 <= len(admitted) <= 4 and spent <= budget
    # Spent up to the limit: the next request is refused for good, saying why.
    refusal = chat(stack.gateway.base_url, key)
    assert refusal.status_code == 402
    error = refusal.json()["error"]
    assert (error["code"], error["type"]) == ("key_budget_exceeded", "billing_error")
    assert "$0.000068 budget" in error["message"] and "does not reset" in error["message"]
    assert refusal.headers["x-should-retry"] == "false" and "retry-after" not in refusal.headers
    assert stack.balance(account_id) == USD - spent


def test_a_daily_budget_resets_at_the_days_turn(stack: Stack) -> None:
    # A gateway whose clock is 8 s before midnight UTC: the test crosses the turn without waiting a day.
    midnight = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    offset = (midnight - timedelta(seconds=8)).timestamp() - time.time()
    gateway = stack.start({"BASTION_CLOCK_OFFSET_SECONDS": str(offset)})
    try:
        # One request fits (its worst case is reserved: about 25,000 nano-USD with max_tokens 10), two do not.
        _, _, key = keyed(stack, budget_nano=30_000, budget_period="daily")
        assert chat(gateway.base_url, key).status_code == 200
        before = key_info(gateway.base_url, key)
        assert before["spend_usd"] == "0.000017" and before["budget_period"] == "daily"
        refused = chat(gateway.base_url, key)
        assert refused.status_code == 402 and refused.json()["error"]["code"] == "key_budget_exceeded"
        assert f"resets at {midnight:%Y-%m-%dT%H:%M:%SZ}" in refused.json()["error"]["message"]
        assert 1 <= int(refused.headers["retry-after"]) <= 8
        admitted = poll(lambda: chat(gateway.base_url, key).status_code == 200, timeout=15, step=0.25)
        assert admitted, "the budget did not reset at midnight"
        after = key_info(gateway.base_url, key)
        assert after["period"] == f"d{midnight:%Y-%m-%d}" != before["period"]
        assert after["spend_usd"] == "0.000017"
    finally:
        stack.gateways.remove(gateway)
        gateway.process.terminate()
        gateway.process.wait(10)


def test_max_parallel_admits_two_at_a_time_and_a_disconnect_frees_a_slot(stack: Stack) -> None:
    _, _, key = keyed(stack, max_parallel=2)
    base = stack.gateway.base_url
    body = {"model": "m-slow", "messages": HELLO, "stream": True}
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(timeout=30) as client:
        requests = [
            client.build_request("POST", base + "/chat/completions", json=body, headers=auth)
            for _ in range(6)
        ]
        responses = [client.send(request, stream=True) for request in requests]
        try:
            statuses = [r.status_code for r in responses]
            assert sorted(statuses) == [200, 200, 429, 429, 429, 429], statuses
            refused = next(r for r in responses if r.status_code == 429)
            refused.read()
            assert "Concurrency limit" in refused.json()["error"]["message"]
            assert refused.headers["retry-after"] == "1"
            assert key_info(base, key)["in_flight"] == 2
            streaming = [r for r in responses if r.status_code == 200]
            next(streaming[0].iter_bytes())  # it is streaming
            streaming[0].close()  # the client goes away mid-stream
            closed = time.monotonic()
            freed = poll(lambda: chat(base, key).status_code == 200, timeout=1.0, step=0.02)
            assert freed, "the slot was not freed within a second of the disconnect"
            assert time.monotonic() - closed < 1.0
        finally:
            for response in responses:
                response.close()
    assert poll(lambda: key_info(base, key)["in_flight"] == 0, timeout=5)


def test_limits_changed_through_the_cli_apply_at_once(stack: Stack) -> None:
    # The shared stack's second instance has the key warm in its cache; the change reaches it at once.
    # Without Redis the serving process learns it from its database poll (every 2 s).
    second = stack.start() if stack.name == "shared" else stack.gateway
    try:
        account_id, key_id, key = keyed(stack)
        assert chat(stack.gateway.base_url, key).status_code == 200
        assert chat(second.base_url, key).status_code == 200  # warm on both
        changed = stack.bastion("keys", "update", key_id, "--budget", "0.000001", "--max-parallel", "3")
        assert changed.returncode == 0, changed.stderr

        def refused_for_budget() -> bool:
            answer = chat(second.base_url, key)
            return answer.status_code == 402 and answer.json()["error"]["code"] == "key_budget_exceeded"

        deadline = 0.5 if stack.name == "shared" else 5.0
        started = time.monotonic()
        assert poll(refused_for_budget, timeout=deadline, step=0.05)
        if stack.name == "shared":
            assert time.monotonic() - started < 0.5  # the very next requests
        info = key_info(second.base_url, key)
        assert (info["budget_usd"], info["max_parallel"]) == ("0.000001", 3)

        def listed() -> dict[str, object]:
            listing = stack.bastion("keys", "list", "--json")
            return next(k for k in json.loads(listing.stdout) if k["id"] == key_id)

        ledger = poll(
            lambda: decimal_usd(sum(r.cost_nano for r in stack.records(account_id))) == listed()["spend_usd"],
            5,
        )
        assert ledger, "keys list's spend is the ledger's"
        assert (listed()["budget_usd"], listed()["version"]) == ("0.000001", 1)
        cleared = stack.bastion("keys", "update", key_id, "--budget", "none", "--models", "m-echo")
        assert cleared.returncode == 0, cleared.stderr
        assert poll(lambda: chat(second.base_url, key).status_code == 200, timeout=deadline, step=0.05)
        other = chat(second.base_url, key, model="m-reasoning")
        assert other.status_code == 400 and other.json()["error"]["code"] == "model_not_found"
        bad = stack.bastion("keys", "update", key_id, "--max-parallel", "0")
        assert bad.returncode != 0 and "positive" in bad.stderr
    finally:
        if second is not stack.gateway:
            stack.gateways.remove(second)
            second.process.terminate()
            second.process.wait(10)


def test_get_v1_key_matches_the_ledger(stack: Stack) -> None:
    account_id, key_id, key = keyed(
        stack, budget_nano=USD, budget_period="monthly", max_parallel=3, models=["m-echo"]
    )
    for _ in range(3):
        assert chat(stack.gateway.base_url, key).status_code == 200
    records = stack.wait_records(account_id, 3)
    spent = sum(r.cost_nano for r in records)
    info = key_info(stack.gateway.base_url, key)
    month = datetime.now(UTC)
    assert info["id"] == key_id and info["object"] == "bastion.key"
    assert (info["rpm"], info["tpm"], info["allowed_models"]) == (1_000_000, 100_000_000, ["m-echo"])
    assert (info["budget_usd"], info["budget_period"], info["period"]) == ("1", "monthly", f"m{month:%Y-%m}")
    assert info["spend_usd"] == decimal_usd(spent) and spent == 3 * ONE_REQUEST
    assert info["remaining_budget_usd"] == "0.999949"
    assert (info["max_parallel"], info["in_flight"], info["reserved_usd"]) == (3, 0, "0")
    assert info["account_available_credit_usd"] == decimal_usd(USD - spent)
    assert str(info["period_resets_at"]).startswith(
        f"{(month.replace(day=28) + timedelta(days=4)):%Y-%m}-01T00:00:00"
    )
    assert 1_000_000 - 3 <= int(str(info["remaining_requests"])) <= 1_000_000
    assert httpx.get(stack.gateway.base_url + "/key").status_code == 401


def test_a_keys_spend_is_rebuilt_from_the_ledger_when_the_live_state_loses_it(stack: Stack) -> None:
    account_id, key_id, key = keyed(stack, budget_nano=30_000, budget_period="monthly")
    assert chat(stack.gateway.base_url, key).status_code == 200
    stack.wait_records(account_id, 1)
    if stack.redis_url is None:  # the in-process state goes with its process
        stack.stop()
        stack.start()
    else:
        client = redis.Redis.from_url(stack.redis_url)
        try:
            lost = list(client.scan_iter(match=f"{stack.redis_prefix}kspend:{key_id}:*"))
            assert lost and client.delete(*lost) == len(lost)  # Redis forgot the key's spend
        finally:
            client.close()
    refused = chat(stack.gateway.base_url, key)  # rebuilt: $0.000017 spent, the next worst case is over
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "key_budget_exceeded"
    assert key_info(stack.gateway.base_url, key)["spend_usd"] == "0.000017"
