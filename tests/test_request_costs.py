"""The cost of each request, on both stacks: `x-bastion-cost-usd` on every non-streamed answer, equal to
its usage record's cost to the nano-dollar, and `GET /v1/requests/{id}` for any request of the caller's
account (a stream's cost is read there), 404 for another account's.
"""

from __future__ import annotations

import io
import secrets
import wave
from decimal import Decimal

import httpx
from stacks import Stack

USD = 10**9
HELLO = [{"role": "user", "content": "hi"}]


def nano(header: str) -> int:
    value = Decimal(header) * USD
    assert value == value.to_integral_value(), header  # exact: no more digits than nano-USD
    return int(value)


def wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(16000)
        audio.writeframes(b"\0\0" * 32000)
    return out.getvalue()


def test_every_non_streamed_answer_carries_its_exact_cost(stack: Stack) -> None:
    account_id, _, key = stack.account(USD)
    client = stack.client(key)
    answers = {
        "chat": client.chat.completions.with_raw_response.create(model="m-echo", messages=HELLO),
        "no-usage": client.chat.completions.with_raw_response.create(model="m-no-usage", messages=HELLO),
        "completions": client.completions.with_raw_response.create(model="m-echo", prompt="Say hi"),
        "embeddings": client.embeddings.with_raw_response.create(model="bge-m3", input=["a", "bb"]),
        "images": client.images.with_raw_response.generate(model="img", prompt="a lighthouse", n=2),
        "transcription": client.audio.transcriptions.with_raw_response.create(
            model="whisper", file=("a.wav", wav()), response_format="verbose_json"
        ),
        "transcript-text": client.audio.transcriptions.with_raw_response.create(
            model="whisper-no-duration", file=("a.wav", wav()), response_format="text"
        ),
    }
    tts = httpx.post(
        stack.gateway.root + "/api/v1/tts/text_to_audio",
        headers={"Authorization": f"Bearer {key}"},
        json={"text": "Hello", "language_code": "en-US", "voice_name": "English-US.Female-1", "encoding": 1},
    )
    costs = {name: nano(raw.headers["x-bastion-cost-usd"]) for name, raw in answers.items()}
    costs["tts"] = nano(tts.headers["x-bastion-cost-usd"])
    records = {r.request_id: r for r in stack.wait_records(account_id, len(costs))}
    by_answer = {name: records[raw.headers["x-request-id"]].cost_nano for name, raw in answers.items()}
    by_answer["tts"] = records[tts.headers["x-request-id"]].cost_nano
    assert costs == by_answer
    assert costs["chat"] == 17_000  # 11 tokens in at $1/1M, 3 out at $2/1M
    assert costs["images"] == 80_000_000  # 2 images at $0.04
    assert costs["tts"] == 100_000  # 5 characters at $20/1M
    assert all(cost > 0 for cost in costs.values()), costs
    assert stack.balance(account_id) == USD - sum(costs.values())


def test_a_streams_cost_is_read_by_its_request_id(stack: Stack) -> None:
    account_id, _, key = stack.account(USD)
    mine = f"mine-{secrets.token_hex(4)}"
    with httpx.stream(
        "POST",
        stack.gateway.base_url + "/chat/completions",
        json={"model": "m-echo", "messages": HELLO, "stream": True},
        headers={"Authorization": f"Bearer {key}", "x-request-id": mine},
    ) as response:
        assert "x-bastion-cost-usd" not in response.headers  # unknown until the stream's end
        body = b"".join(response.iter_bytes())
    assert body.endswith(b"data: [DONE]\n\n")  # the stream itself is as the upstream sent it
    auth = {"Authorization": f"Bearer {key}"}
    # Asked right away: the record may still be on its way to the database, and is waited for.
    answer = httpx.get(f"{stack.gateway.base_url}/requests/{mine}", headers=auth)
    assert answer.status_code == 200, answer.text
    record = next(r for r in stack.records(account_id) if r.client_request_id == mine)
    got = answer.json()
    assert got == {
        "id": record.request_id,
        "object": "bastion.request",
        "client_request_id": mine,
        "model": "m-echo",
        "endpoint": "chat",
        "status": 200,
        "prompt_tokens": 11,
        "completion_tokens": 3,
        "quantity": 0,
        "unit": None,
        "cost_usd": "0.000017",
        "cost_nano": 17_000,
        "estimated": False,
        "recovered": False,
        "latency_ms": record.latency_ms,
        "created": int(record.created_at.timestamp()),
        "created_at": got["created_at"],
    }
    assert answer.headers["x-ratelimit-limit-requests"]
    by_own_id = httpx.get(f"{stack.gateway.base_url}/requests/{record.request_id}", headers=auth)
    assert by_own_id.json() == got


def test_another_accounts_request_is_not_found(stack: Stack) -> None:
    _, _, key = stack.account(USD)
    _, _, other = stack.account(USD)
    raw = stack.client(key).chat.completions.with_raw_response.create(
        model="m-echo", messages=HELLO, extra_headers={"x-request-id": f"theirs-{secrets.token_hex(4)}"}
    )
    mine = httpx.get(
        f"{stack.gateway.base_url}/requests/{raw.headers['x-request-id']}",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert mine.status_code == 200
    for request_id in (raw.headers["x-request-id"], mine.json()["id"], "req_unknown"):
        answer = httpx.get(
            f"{stack.gateway.base_url}/requests/{request_id}", headers={"Authorization": f"Bearer {other}"}
        )
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "not_found"
    assert httpx.get(f"{stack.gateway.base_url}/requests/{mine.json()['id']}").status_code == 401
