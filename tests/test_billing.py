"""Keys, credit, limits and the ledger, on both stacks, through the official SDK and a real upstream.

Test prices (tests/conftest.py): $1 per 1M input tokens, $2 per 1M output tokens, so one token in is
1,000 nano-USD and one token out 2,000. The mock upstream reports 11 prompt and 3 completion tokens:
17,000 nano-USD per request.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest
from stacks import Stack, poll
from upstream import MockUpstream

from bastion.billing.estimate import prompt_tokens

HELLO = [{"role": "user", "content": "hi"}]
ONE_REQUEST = 17_000  # 11 * 1,000 + 3 * 2,000
USD = 10**9


def _post(
    stack: Stack, key: str | None, body: object, headers: dict[str, str] | None = None
) -> httpx.Response:
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(stack.gateway.base_url + "/chat/completions", json=body, headers=auth | (headers or {}))


# ---------------------------------------------------------------------------------------- keys


def test_every_bad_key_gets_the_same_401(stack: Stack) -> None:
    _, _, good = stack.account(USD)
    past = datetime.now(UTC) - timedelta(minutes=1)
    _, _, expired = stack.account(USD, key="qbt_" + "E" * 40, expires_at=past)
    _, _, revoked = stack.account(USD, key="qbt_" + "R" * 40, revoked_at=past)
    body = {"model": "m-echo", "messages": HELLO}
    answers = [
        httpx.post(stack.gateway.base_url + "/chat/completions", json=body),
        httpx.post(stack.gateway.base_url + "/chat/completions", json=body, headers={"Authorization": good}),
        httpx.post(
            stack.gateway.base_url + "/chat/completions", json=body, headers={"Authorization": "Basic x"}
        ),
        _post(stack, "qbt_short", body),
        _post(stack, good + "x", body),
        _post(stack, "qbt_" + "U" * 40, body),
        _post(stack, expired, body),
        _post(stack, revoked, body),
        httpx.get(stack.gateway.base_url + "/models"),
        httpx.post(stack.gateway.base_url + "/chat/completions?api_key=" + good, json=body),
    ]
    for response in answers:
        assert response.status_code == 401, response.text
        assert response.json() == answers[0].json()
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert response.json()["error"]["type"] == "authentication_error"
        assert response.headers["x-should-retry"] == "false"
        assert "x-ratelimit-limit-requests" not in response.headers
    with pytest.raises(openai.AuthenticationError):
        stack.client(expired).chat.completions.create(model="m-echo", messages=HELLO)
    assert (
        stack.client(good).chat.completions.create(model="m-echo", messages=HELLO).choices[0].message.content
    )


def test_a_key_sees_and_uses_only_its_models(stack: Stack) -> None:
    _, _, key = stack.account(USD, models=["m-echo", "m-think"])
    client = stack.client(key)
    assert sorted(m.id for m in client.models.list()) == ["m-echo", "m-think"]
    assert client.models.retrieve("m-echo").id == "m-echo"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("m-spaced")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m-spaced", messages=HELLO)
    assert caught.value.code == "model_not_found"
    unrestricted = stack.client(stack.account(USD)[2])
    assert "m-spaced" in {m.id for m in unrestricted.models.list()}


def test_revocation_takes_effect_within_5_seconds(stack: Stack) -> None:
    _, key_id, key = stack.account(USD)
    assert _post(stack, key, {"model": "m-echo", "messages": HELLO}).status_code == 200
    revoked = stack.bastion("keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    started = time.monotonic()
    refused = poll(lambda: _post(stack, key, {"model": "m-echo", "messages": HELLO}).status_code == 401, 5)
    assert refused, "a revoked key was still accepted after 5 s"
    assert time.monotonic() - started < 5


# -------------------------------------------------------------------------------------- credit


def test_402_before_and_after_a_top_up(stack: Stack) -> None:
    account_id, _, key = stack.account(10_000)  # $0.00001
    body = {"model": "m-echo", "messages": HELLO, "max_tokens": 16}  # worst case (5 + 32) * 1,000 nano
    refused = _post(stack, key, body)
    assert refused.status_code == 402
    error = refused.json()["error"]
    assert (error["code"], error["type"]) == ("insufficient_funds", "billing_error")
    assert "could cost up to $0.000037" in error["message"] and "$0.00001 is available" in error["message"]
    assert refused.headers["x-should-retry"] == "false"
    assert refused.headers["x-ratelimit-limit-requests"]
    with pytest.raises(openai.APIStatusError) as caught:
        stack.client(key).chat.completions.create(model="m-echo", messages=HELLO, max_tokens=16)
    assert caught.value.status_code == 402
    assert stack.records(account_id) == []  # nothing reached the upstream, nothing recorded

    topped = stack.bastion("credits", "add", account_id, "1", "--note", "test top-up")
    assert topped.returncode == 0, topped.stderr
    admitted = poll(lambda: _post(stack, key, body).status_code == 200, 6)
    assert admitted, "the top-up did not reach the gateway within 6 s"


def test_credit_held_by_requests_in_flight_is_a_402_with_retry_after(
    stack: Stack, upstream: MockUpstream
) -> None:
    # Worst case per request: (5 + 2 * 100) * 1,000 = 205,000 nano; the balance covers one, not two.
    account_id, _, key = stack.account(300_000)
    body = {"model": "m-gated", "messages": HELLO, "max_tokens": 100, "stream": True}
    gate = f"inflight-{account_id}"
    with httpx.stream(
        "POST",
        stack.gateway.base_url + "/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}", "x-request-id": gate},
    ) as first:
        assert first.status_code == 200
        lines = first.iter_lines()
        assert '"first"' in next(line for line in lines if "first" in line)
        second = _post(stack, key, {**body, "stream": False, "model": "m-echo"})
        assert second.status_code == 402
        assert "in flight" in second.json()["error"]["message"]
        assert int(second.headers["retry-after"]) >= 1
        assert second.headers["x-should-retry"] == "true"
        upstream.open_gate(gate)
        assert any("[DONE]" in line for line in lines)
    third = poll(
        lambda: _post(stack, key, {**body, "stream": False, "model": "m-echo"}).status_code == 200, 5
    )
    assert third


def test_no_overspend_with_50_concurrent_requests(stack: Stack, upstream: MockUpstream) -> None:
    # Worst case (5 + 2 * 10) * 1,000 = 25,000 nano; the balance covers 5 of them.
    balance = 5 * 25_000
    account_id, _, key = stack.account(balance)
    client = stack.aclient(key)
    prefix = f"ovs-{account_id}-"

    async def one(i: int) -> int:
        try:
            await client.chat.completions.create(
                model="m-echo", messages=HELLO, max_tokens=10, extra_headers={"x-request-id": f"{prefix}{i}"}
            )
            return 200
        except openai.APIStatusError as exc:
            return exc.status_code

    statuses = asyncio.run(_all(one(i) for i in range(50)))
    served = statuses.count(200)
    assert set(statuses) <= {200, 402} and served >= 5
    reached = [r for r in upstream.requests if r.key.startswith(prefix)]
    assert len(reached) == served
    records = stack.wait_records(account_id, served)
    assert sorted(r.client_request_id for r in records) == sorted(r.key for r in reached)  # type: ignore[type-var]
    assert len({r.request_id for r in records}) == served
    final = stack.balance(account_id)
    assert final >= 0
    assert final == balance - ONE_REQUEST * served


async def _all(coroutines: Iterator[object]) -> list[int]:
    return list(await asyncio.gather(*coroutines))  # type: ignore[call-overload]


# ---------------------------------------------------------------------------------- settlement


def test_json_answer_is_billed_exactly(stack: Stack) -> None:
    account_id, key_id, key = stack.account(USD)
    stack.client(key).chat.completions.create(
        model="m-echo", messages=HELLO, extra_headers={"x-request-id": f"j-{key_id}"}
    )
    (record,) = stack.wait_records(account_id, 1)
    assert (record.client_request_id, record.key_id, record.model, record.endpoint) == (
        f"j-{key_id}",
        key_id,
        "m-echo",
        "chat",
    )
    assert record.request_id.startswith("req_")  # the ledger's own id
    assert (record.prompt_tokens, record.completion_tokens, record.cost_nano) == (11, 3, ONE_REQUEST)
    assert (record.status, record.estimated) == (200, False)
    assert stack.balance(account_id) == USD - ONE_REQUEST


def test_a_reused_request_id_is_billed_for_every_request(stack: Stack) -> None:
    """The client's x-request-id is echoed, never the ledger's key: repeating it cannot skip a charge."""
    account_id, _, key = stack.account(USD)
    client = stack.client(key)
    for stream in (False, False, True):
        answer = client.chat.completions.with_raw_response.create(
            model="m-echo", messages=HELLO, stream=stream, extra_headers={"x-request-id": "same-id"}
        )
        assert answer.headers["x-request-id"] == "same-id"
        if stream:
            list(answer.parse())
    records = stack.wait_records(account_id, 3)
    assert [r.client_request_id for r in records] == ["same-id"] * 3
    assert len({r.request_id for r in records}) == 3
    assert stack.balance(account_id) == USD - 3 * ONE_REQUEST


def test_a_clients_next_request_finds_its_last_one_settled(stack: Stack) -> None:
    """m-late-eof's upstream ends its body 100 ms after [DONE], while the client has its whole answer at
    [DONE] and asks again at once. The credit covers one worst case only once the previous request's
    reservation is released: settlement leaves before the answer's last bytes, so none is refused."""
    body = {"model": "m-late-eof", "messages": HELLO, "stream": True, "max_tokens": 1000}
    worst = prompt_tokens(body) * 1_000 + 1_000 * 2_000
    rounds = 5
    assert worst > rounds * ONE_REQUEST  # so two reservations never fit
    account_id, _, key = stack.account(worst + rounds * ONE_REQUEST)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=stack.gateway.base_url, headers=headers, timeout=10) as http:
        for _ in range(rounds):
            with http.stream("POST", "/chat/completions", json=body) as response:
                answer = response.read()
            assert response.status_code == 200, answer
            assert answer.endswith(b"data: [DONE]\n\n")
    assert len(stack.wait_records(account_id, rounds)) == rounds
    assert stack.balance(account_id) == worst


@pytest.mark.parametrize("client_asks", [False, True])
def test_stream_is_billed_from_upstream_usage(stack: Stack, client_asks: bool) -> None:
    account_id, _, key = stack.account(USD)
    options = {"stream_options": {"include_usage": True}} if client_asks else {}
    chunks = list(
        stack.client(key).chat.completions.create(model="m-echo", messages=HELLO, stream=True, **options)
    )
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == (1 if client_asks else 0)
    (record,) = stack.wait_records(account_id, 1)
    assert (record.prompt_tokens, record.completion_tokens, record.estimated) == (11, 3, False)
    assert record.cost_nano == ONE_REQUEST


def test_usage_in_a_final_chunk_with_choices_is_used(stack: Stack) -> None:
    account_id, _, key = stack.account(USD)
    list(stack.client(key).chat.completions.create(model="m-usage-in-final", messages=HELLO, stream=True))
    (record,) = stack.wait_records(account_id, 1)
    assert (record.prompt_tokens, record.completion_tokens, record.estimated) == (11, 3, False)


def test_a_stream_without_usage_is_estimated_never_zero(stack: Stack) -> None:
    account_id, _, key = stack.account(USD)
    text = "".join(
        c.choices[0].delta.content or ""
        for c in stack.client(key).chat.completions.create(model="m-no-usage", messages=HELLO, stream=True)
        if c.choices
    )
    assert text == "Hello world"
    (record,) = stack.wait_records(account_id, 1)
    assert record.estimated
    assert record.completion_tokens == 3  # ceil(11 characters / 4)
    assert record.prompt_tokens == 5  # 4 per message + ceil(2 characters / 4)
    assert record.cost_nano == 5 * 1_000 + 3 * 2_000


def test_explicit_zero_usage_is_zero(stack: Stack) -> None:
    account_id, _, key = stack.account(USD)
    stack.client(key).chat.completions.create(model="m-zero-usage", messages=HELLO)
    list(stack.client(key).chat.completions.create(model="m-zero-usage", messages=HELLO, stream=True))
    records = stack.wait_records(account_id, 2)
    assert [(r.cost_nano, r.estimated) for r in records] == [(0, False), (0, False)]
    assert stack.balance(account_id) == USD


def test_a_client_that_disconnects_mid_stream_pays_for_what_was_produced(
    stack: Stack, upstream: MockUpstream
) -> None:
    account_id, _, key = stack.account(USD)
    request_id = f"gone-{account_id}"
    stream = stack.client(key).chat.completions.create(
        model="m-slow", messages=HELLO, stream=True, extra_headers={"x-request-id": request_id}
    )
    received = [c for _, c in zip(range(4), stream, strict=False)]
    stream.close()
    assert upstream.wait_closed(request_id, timeout=3) is not None
    (record,) = stack.wait_records(account_id, 1)
    assert record.status == 499 and record.estimated
    produced = sum(len(c.choices[0].delta.content or "") for c in received if c.choices)
    assert record.completion_tokens >= -(-produced // 4) > 0
    assert record.cost_nano > 0
    assert stack.balance(account_id) == USD - record.cost_nano


# --------------------------------------------------------------------------------- rate limits


def test_429_with_headers_and_retry_after(stack: Stack, upstream: MockUpstream) -> None:
    account_id, _, key = stack.account(USD, rpm=3)
    remaining = []
    for _ in range(3):
        response = _post(stack, key, {"model": "m-echo", "messages": HELLO})
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit-requests"] == "3"
        assert response.headers["x-ratelimit-reset-requests"].endswith("s")
        assert int(response.headers["x-ratelimit-remaining-tokens"]) > 0
        remaining.append(response.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["2", "1", "0"]
    # The pool has idle connections by now, so the upstream request was made ready on one while the
    # admission was decided: refused, it must not have left.
    refused_id = f"limited-{account_id}"
    limited = _post(stack, key, {"model": "m-echo", "messages": HELLO}, {"x-request-id": refused_id})
    assert limited.status_code == 429
    assert [r for r in upstream.requests if r.key == refused_id] == []
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(limited.headers["retry-after"]) <= 20
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError):
        stack.client(key).chat.completions.create(model="m-echo", messages=HELLO)


def test_a_request_larger_than_the_token_limit_is_refused_for_good(stack: Stack) -> None:
    _, _, key = stack.account(USD, tpm=100)
    response = _post(stack, key, {"model": "m-echo", "messages": HELLO, "max_tokens": 500})
    assert response.status_code == 429
    assert "lower max_tokens" in response.json()["error"]["message"]
    assert response.headers["x-should-retry"] == "false"
    assert _post(stack, key, {"model": "m-echo", "messages": HELLO, "max_tokens": 50}).status_code == 200


# -------------------------------------------------------------------------------------- ledger


def test_ledger_check_catches_a_planted_mismatch(stack: Stack) -> None:
    account_id, _, key = stack.account(USD)
    stack.client(key).chat.completions.create(model="m-echo", messages=HELLO)
    stack.wait_records(account_id, 1)
    clean = stack.bastion("ledger", "check", "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr

    async def plant(store: object) -> None:
        from sqlalchemy import text

        async with store.engine.begin() as connection:  # type: ignore[attr-defined]
            await connection.execute(
                text("UPDATE accounts SET balance_nano = balance_nano + 1 WHERE id = :id"), {"id": account_id}
            )

    stack.with_store(plant)
    caught = stack.bastion("ledger", "check")
    assert caught.returncode == 1
    line = next(line for line in caught.stdout.splitlines() if "MISMATCH" in line)
    assert line.split()[0].startswith("acct-")
    stack.with_store(lambda store: _unplant(store, account_id))
    assert stack.bastion("ledger", "check").returncode == 0


async def _unplant(store: object, account_id: str) -> None:
    from sqlalchemy import text

    async with store.engine.begin() as connection:  # type: ignore[attr-defined]
        await connection.execute(
            text("UPDATE accounts SET balance_nano = balance_nano - 1 WHERE id = :id"), {"id": account_id}
        )


def test_management_rejects_bad_input_and_changes_nothing(stack: Stack) -> None:
    account_id, _, _ = stack.account(USD)
    before = stack.bastion("accounts", "list", "--json").stdout
    for args in (
        ("credits", "add", account_id, "-5"),
        ("credits", "add", account_id, "ten"),
        ("credits", "add", account_id, "0.0000000001"),
        ("credits", "add", "no-such-account", "5"),
        ("accounts", "create", stack.with_store(lambda s: s.account(account_id)).name),
        ("keys", "create", "no-such-account"),
        ("keys", "create", account_id, "--rpm", "0"),
        ("keys", "create", account_id, "--expires", "yesterday"),
        ("keys", "revoke", "key_nope"),
    ):
        result = stack.bastion(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stderr.startswith("bastion: ") and len(result.stderr.strip().splitlines()) == 1
    assert stack.bastion("accounts", "list", "--json").stdout == before


def test_adjustments_are_signed_and_keep_the_ledger_balanced(stack: Stack) -> None:
    account_id, _, _ = stack.account(USD)
    adjusted = stack.bastion("credits", "adjust", account_id, "-0.25", "--note", "refund", "--json")
    assert adjusted.returncode == 0, adjusted.stderr
    assert '"kind": "adjustment"' in adjusted.stdout and '"actor": "cli:' in adjusted.stdout
    assert stack.balance(account_id) == USD - USD // 4
    assert stack.bastion("ledger", "check").returncode == 0


def test_keys_create_json_prints_the_key_once(stack: Stack, tmp_path: Path) -> None:
    account_id, _, _ = stack.account(USD)
    created = stack.bastion("keys", "create", account_id, "--name", "ci", "--rpm", "7", "--json")
    assert created.returncode == 0, created.stderr
    import json

    data = json.loads(created.stdout)
    assert data["key"].startswith("qbt_") and data["rpm"] == 7 and data["prefix"] == data["key"][:12]
    listed = stack.bastion("keys", "list", account_id, "--json").stdout
    assert data["key"] not in listed and data["prefix"] in listed
    assert stack.client(data["key"]).models.list().data


def test_key_limits_past_32_bits_are_stored_and_enforced(stack: Stack) -> None:
    """A tokens-per-minute limit past 2^31 (big batch keys) is a BIGINT on both databases."""
    account_id, _, _ = stack.account(USD)
    created = stack.bastion(
        "keys", "create", account_id, "--name", "big", "--rpm", "3000000000", "--tpm", "5000000000", "--json"
    )
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    listed = json.loads(stack.bastion("keys", "list", account_id, "--json").stdout)
    assert [(k["rpm"], k["tpm"]) for k in listed if k["name"] == "big"] == [(3_000_000_000, 5_000_000_000)]
    answer = stack.client(key).chat.completions.with_raw_response.create(model="m-echo", messages=HELLO)
    assert answer.headers["x-ratelimit-limit-tokens"] == "5000000000"
    assert answer.headers["x-ratelimit-limit-requests"] == "3000000000"
