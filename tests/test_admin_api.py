"""The admin API under /admin/v1: the CLI's operations over HTTP, behind BASTION_ADMIN_TOKEN."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import openai
import pytest
import yaml
from conftest import gateway_models_file
from stacks import Stack, drop_stack, make_stack
from upstream import MockUpstream

TOKEN = "admin-token-for-tests-0123456789"
HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def admin(
    upstream: MockUpstream, blackhole_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("admin")
    config = workdir / "bastion.yaml"
    config.write_text(yaml.safe_dump(gateway_models_file(upstream, blackhole_port)))
    stack = make_stack("embedded", config, workdir)
    stack.start({"BASTION_ADMIN_TOKEN": TOKEN})
    yield stack
    drop_stack(stack)


@pytest.fixture
def api(admin: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=admin.gateway.root + "/admin/v1", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as c:
        yield c


def test_admin_api_is_off_without_a_token(gateway: object) -> None:
    response = httpx.get(gateway.root + "/admin/v1/accounts", headers={"Authorization": f"Bearer {TOKEN}"})  # type: ignore[attr-defined]
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Bearer {TOKEN}x", TOKEN, f"Basic {TOKEN}"])
def test_admin_api_needs_the_exact_token(admin: Stack, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.get(admin.gateway.root + "/admin/v1/accounts", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_the_whole_lifecycle_over_http(admin: Stack, api: httpx.Client) -> None:
    account = api.post("/accounts", json={"name": "http-co", "credits_usd": "0.00002"})
    assert account.status_code == 201, account.text
    account_id = account.json()["id"]
    assert account.json()["balance_usd"] == "0.00002" and "balance_nano" not in account.json()

    created = api.post("/keys", json={"account": "http-co", "name": "svc", "rpm": 50, "models": ["m-echo"]})
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    client = openai.OpenAI(base_url=admin.gateway.base_url, api_key=key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:  # $0.00002 cannot cover the worst case
        client.chat.completions.create(model="m-echo", messages=HELLO, max_tokens=64)
    assert caught.value.status_code == 402

    credit = api.post(f"/accounts/{account_id}/credits", json={"usd": 5, "note": "invoice 42"})
    assert credit.status_code == 201 and credit.json()["balance_usd"] == "5.00002"
    assert credit.json()["amount_usd"] == "5"
    # In-process state and the admin API share one process: the top-up counts at once.
    answer = client.chat.completions.create(model="m-echo", messages=HELLO, max_tokens=64)
    assert answer.choices[0].message.content == "echo: hi"

    assert [k["name"] for k in api.get("/keys", params={"account": "http-co"}).json()] == ["svc"]
    assert key not in api.get("/keys").text
    usage = admin.wait_records(account_id, 1)
    listed = api.get("/usage", params={"account": account_id}).json()
    assert [r["request_id"] for r in listed] == [usage[0].request_id]
    assert (listed[0]["cost_usd"], listed[0]["cost_nano"]) == ("0.000017", 17_000)  # as /v1/requests/{id}
    assert api.get("/ledger").json()["ok"] is True
    adjusted = api.post(f"/accounts/{account_id}/adjustments", json={"usd": "-0.000017", "note": "goodwill"})
    assert adjusted.status_code == 201 and adjusted.json()["kind"] == "adjustment"
    assert adjusted.json()["balance_usd"] == "4.999986"  # 5.00002 - 0.000017 (usage) - 0.000017
    assert api.post(f"/accounts/{account_id}/adjustments", json={"usd": "1"}).status_code == 400  # no note
    assert api.get("/ledger").json()["ok"] is True

    revoked = api.post(f"/keys/{created.json()['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="m-echo", messages=HELLO)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/accounts", {"name": ""}, 400),
        ("POST", "/accounts", {"name": "x", "credits_usd": "-1"}, 400),
        ("POST", "/accounts", {"name": "x", "credits_usd": "lots"}, 400),
        ("POST", "/accounts/nobody/credits", {"usd": "1"}, 404),
        ("POST", "/keys", {"account": "nobody"}, 404),
        ("POST", "/keys/key_nope/revoke", None, 404),
    ],
)
def test_bad_input_is_an_envelope_and_changes_nothing(
    api: httpx.Client, method: str, path: str, body: object, status: int
) -> None:
    before = api.get("/accounts").json()
    response = api.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert api.get("/accounts").json() == before


def test_duplicate_names_are_409(api: httpx.Client) -> None:
    assert api.post("/accounts", json={"name": "twice"}).status_code == 201
    response = api.post("/accounts", json={"name": "twice"})
    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"


def test_every_answer_carries_server_timing(admin: Stack) -> None:
    """Not only the proxied routes: operations, the admin API, unknown routes and wrong methods."""
    root = admin.gateway.root
    auth = {"Authorization": f"Bearer {TOKEN}"}
    answers = {
        "healthz": httpx.get(root + "/healthz"),
        "readyz": httpx.get(root + "/readyz"),
        "metrics": httpx.get(root + "/metrics"),
        "openapi": httpx.get(root + "/openapi.json"),
        "404": httpx.get(root + "/no/such/route"),
        "405": httpx.delete(root + "/healthz"),
        "405 on /v1": httpx.get(root + "/v1/chat/completions"),
        "admin": httpx.get(root + "/admin/v1/accounts", headers=auth),
        "admin 401": httpx.get(root + "/admin/v1/accounts"),
        "admin 400": httpx.post(root + "/admin/v1/accounts", headers=auth, json={"name": ""}),
    }
    statuses = {name: response.status_code for name, response in answers.items()}
    assert statuses == {
        "healthz": 200,
        "readyz": 200,
        "metrics": 200,
        "openapi": 200,
        "404": 404,
        "405": 405,
        "405 on /v1": 405,
        "admin": 200,
        "admin 401": 401,
        "admin 400": 400,
    }
    timings = {name: response.headers.get("server-timing", "") for name, response in answers.items()}
    assert all(re.fullmatch(r"gateway;dur=\d+\.\d\d", timing) for timing in timings.values()), timings


def test_key_limits_over_http(admin: Stack, api: httpx.Client) -> None:
    assert api.post("/accounts", json={"name": "limits-co", "credits_usd": "1"}).status_code == 201
    created = api.post(
        "/keys",
        json={
            "account": "limits-co",
            "name": "ci",
            "budget_usd": "0.5",
            "budget_period": "daily",
            "max_parallel": 2,
        },
    )
    assert created.status_code == 201, created.text
    key = created.json()
    assert (key["budget_usd"], key["budget_period"], key["max_parallel"], key["version"]) == (
        "0.5",
        "daily",
        2,
        0,
    )
    changed = api.patch(f"/keys/{key['id']}", json={"budget_usd": None, "rpm": 30, "name": "ci-2"})
    assert changed.status_code == 200, changed.text
    got = changed.json()
    assert (got["budget_usd"], got["budget_period"], got["rpm"], got["name"], got["version"]) == (
        None,
        None,
        30,
        "ci-2",
        1,
    )
    assert got["max_parallel"] == 2  # not sent: unchanged
    bad = api.patch(f"/keys/{key['id']}", json={"max_parallel": 0})
    assert bad.status_code == 400 and "positive" in bad.json()["error"]["message"]
    assert api.patch("/keys/key_nope", json={"rpm": 1}).status_code == 404
    info = httpx.get(admin.gateway.base_url + "/key", headers={"Authorization": f"Bearer {key['key']}"})
    assert (info.json()["rpm"], info.json()["name"], info.json()["budget_usd"]) == (30, "ci-2", None)


def test_a_key_for_a_model_the_models_file_does_not_serve_is_refused(api: httpx.Client) -> None:
    assert api.post("/accounts", json={"name": "models-co"}).status_code == 201
    before = api.get("/keys", params={"account": "models-co"}).json()
    refused = api.post("/keys", json={"account": "models-co", "models": ["m-echo", "gpt-5"]})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_request", "models")
    assert "'gpt-5'" in error["message"] and "allow_unknown_models" in error["message"]
    assert "'m-echo'" not in error["message"]  # only the unknown one is named
    assert api.get("/keys", params={"account": "models-co"}).json() == before

    allowed = api.post(
        "/keys", json={"account": "models-co", "models": ["gpt-5"], "allow_unknown_models": True}
    )
    assert allowed.status_code == 201 and allowed.json()["allowed_models"] == ["gpt-5"]
    key_id = allowed.json()["id"]
    changed = api.patch(f"/keys/{key_id}", json={"models": ["m-think", "gpt-6"]})
    assert changed.status_code == 400 and changed.json()["error"]["param"] == "models"
    assert "'gpt-6'" in changed.json()["error"]["message"]
    kept = api.get("/keys", params={"account": "models-co"}).json()
    assert [k["allowed_models"] for k in kept] == [["gpt-5"]] and kept[0]["version"] == 0
    ok = api.patch(f"/keys/{key_id}", json={"models": ["m-think"]})
    assert ok.status_code == 200 and ok.json()["allowed_models"] == ["m-think"]
