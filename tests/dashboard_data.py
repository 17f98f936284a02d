"""A busy gateway's dashboard data, as long as real data gets: 30 models of every category and unit with
long ids, 20 accounts, an account with 12 keys of 40-character names and every kind of limit, members
and operators with 40-character emails, 1,000 usage records of every unit, credit with notes, and the
audit entries all of that writes.

Everything is written through the operations the CLI and the dashboard use (tests/browser.py's
`with_management`; usage through the ledger writer's `record_usage`), before the gateway starts, from a
fixed seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from browser import TESTS, password_hash

from bastion.db.audit import Actor
from bastion.db.refusals import REFUSAL_CODES, RefusalTally
from bastion.db.store import UsageRow
from bastion.management import Management
from bastion.money import cost_nano

USD = 10**9
SEED = 20
MILLION, ONE = Decimal(1_000_000), Decimal(1)

# (id, category, endpoints, price per unit: the units it is billed in)
TEXT, CHAT_AND_TEXT, CHAT = ["chat", "completions", "responses"], ["chat", "completions"], ["chat"]
AUDIO = ["transcription"]
MODELS: list[tuple[str, str, list[str], dict[str, float]]] = [
    ("meta-llama/Llama-3.3-70B-Instruct-Turbo", "LLM", TEXT, {"input": 0.88, "output": 0.88}),
    ("meta-llama/Llama-3.1-405B-Instruct-FP8", "LLM", CHAT_AND_TEXT, {"input": 3.5, "output": 3.5}),
    ("meta-llama/Llama-3.1-8B-Instruct-Turbo-128k", "LLM", CHAT_AND_TEXT, {"input": 0.18, "output": 0.18}),
    (
        "deepseek-ai/DeepSeek-R1-Distill-Llama-70B",
        "LLM",
        ["chat", "responses"],
        {"input": 2.0, "output": 2.0},
    ),
    ("deepseek-ai/DeepSeek-V3-0324-long-context", "LLM", CHAT, {"input": 1.25, "output": 1.25}),
    ("Qwen/Qwen2.5-72B-Instruct-Turbo", "LLM", CHAT_AND_TEXT, {"input": 1.2, "output": 1.2}),
    ("Qwen/Qwen3-235B-A22B-Thinking-2507-FP8", "LLM", ["chat", "responses"], {"input": 0.65, "output": 3.0}),
    ("Qwen/Qwen2.5-Coder-32B-Instruct", "Code", CHAT_AND_TEXT, {"input": 0.8, "output": 0.8}),
    ("mistralai/Mixtral-8x22B-Instruct-v0.1", "LLM", CHAT, {"input": 1.2, "output": 1.2}),
    ("mistralai/Mistral-Small-3.1-24B-Instruct-2503", "LLM", CHAT, {"input": 0.1, "output": 0.3}),
    ("mistralai/Codestral-22B-v0.1-code-completion", "Code", ["completions"], {"input": 0.2, "output": 0.6}),
    ("google/gemma-3-27b-it-vision-preview", "Vision", CHAT, {"input": 0.27, "output": 0.27}),
    ("meta-llama/Llama-3.2-90B-Vision-Instruct", "Vision", CHAT, {"input": 1.2, "output": 1.2}),
    ("meta-llama/Llama-Guard-4-12B-safety-classifier", "Safety", CHAT, {"input": 0.2, "output": 0.2}),
    ("nvidia/Llama-3.1-Nemotron-70B-Instruct-HF", "LLM", CHAT_AND_TEXT, {"input": 0.88, "output": 0.88}),
    ("openai/gpt-oss-120b", "LLM", TEXT, {"input": 0.15, "output": 0.6}),
    ("openai/gpt-oss-20b", "LLM", TEXT, {"input": 0.05, "output": 0.2}),
    ("BAAI/bge-m3-multilingual-embedding", "Embedding", ["embeddings"], {"input": 0.016}),
    ("intfloat/multilingual-e5-large-instruct", "Embedding", ["embeddings"], {"input": 0.02}),
    ("nomic-ai/nomic-embed-text-v1.5-long-context", "Embedding", ["embeddings"], {"input": 0.008}),
    ("black-forest-labs/FLUX.1-schnell-Free", "Image", ["images"], {"image": 0.0027}),
    ("black-forest-labs/FLUX.1.1-pro-ultra-raw", "Image", ["images"], {"image": 0.06}),
    ("stabilityai/stable-diffusion-3.5-large-turbo", "Image", ["images"], {"image": 0.04}),
    (
        "openai/whisper-large-v3-turbo-multilingual",
        "Transcription",
        AUDIO,
        {"audio_second": 0.0000667, "request": 0.006},
    ),
    ("distil-whisper/distil-large-v3.5-english-only", "Transcription", AUDIO, {"audio_second": 0.0000278}),
    (
        "nvidia/parakeet-tdt-0.6b-v2-streaming-asr",
        "Transcription",
        AUDIO,
        {"audio_second": 0.00011, "request": 0.0125},
    ),
    ("hexgrad/Kokoro-82M-text-to-speech-v1.0", "TTS", ["tts"], {"characters": 15}),
    ("nvidia/riva-tts-fastpitch-hifigan-en-US-multi", "TTS", ["tts"], {"characters": 16.5}),
    ("canopylabs/orpheus-3b-0.1-ft-expressive-tts", "TTS", ["tts"], {"characters": 30}),
    (
        "microsoft/Phi-4-multimodal-instruct-128k-vision",
        "Vision",
        CHAT_AND_TEXT,
        {"input": 0.07, "output": 0.14},
    ),
]
PROVIDERS = [
    {"name": "together-us-east", "base_url": "https://api.inference-us-east-1.together-cloud.example/v1"},
    {"name": "gpu-pool-eu-central-1", "base_url": "https://gpu-pool.eu-central-1.inference.internal.example/v1"},
    {"name": "local-mock", "type": "mock"},
]  # fmt: skip

ACCOUNT = "Northwind Traders · Applied Research EU"  # 40 characters, the one the account pages show
OTHER_ACCOUNTS = [
    "Globex Corporation — Machine Learning Op",
    "Initech Document Intelligence (Pilot)",
    "Umbrella Health Research Institute",
    "Hooli XYZ Search Quality",
    "Stark Industries · Advanced Prototyping",
    "Wayne Enterprises Customer Experience",
    "Cyberdyne Systems Robotics Division",
    "Soylent Nutrition Analytics Platform",
    "Tyrell Corporation Replicant Support",
    "Massive Dynamic Fringe Science Group",
    "Wonka Industries Product Innovation Lab",
    "Aperture Science Enrichment Center",
    "Oscorp Biotech Genomics Pipeline",
    "Vandelay Industries Import/Export",
    "Dunder Mifflin Paper Co. Sales Assist",
    "Pied Piper Compression Research",
    "Acme Corporation Roadrunner Analytics",
    "Gringotts Wizarding Bank Fraud Team",
    "Monsters Inc. Scream Energy Forecasting",
]
KEY_NAMES = [
    "production-eu-west-1-batch-summarizer-v2",
    "Customer support assistant (EU), primary",
    "staging · nightly evaluation harness ##1",
    "data-platform/airflow-embedding-backfill",
    "Mobile app — on-device fallback (iOS/And",
    "research-team-long-context-experiments-3",
    "invoice OCR + transcription pipeline prd",
    "partner-integration-globex-sandbox-key-1",
    "Marketing copy generator (shared, capped",
    "ci-github-actions-integration-test-matrx",
]
CREATED_IN_THE_BROWSER = [
    "onboarding-tutorial-notebook-key-dana-k2",
    "legacy-v1-migration-key-do-not-use-after",
]
PEOPLE = [
    ("alexandra", "montgomery-featherstone"),
    ("maximilian", "oppenheimer-castellano"),
    ("guadalupe", "vanderbilt-richardson"),
    ("konstantinos", "papadopoulos-ioannou"),
    ("siobhan", "fitzgerald-mcallister"),
    ("bartholomew", "worthington-smythe"),
]
ADDRESSES = ["2001:db8:85a3:8d3:1319:8a2e:370:7348", "203.0.113.254", "198.51.100.23"]
NOTES = [
    "Invoice INV-2026-004217 · prepaid annual commitment, PO 88-1192-A (approved by finance)",
    "Wire transfer received 2026-03-02, ref. NWT-EU-SEPA-0008841277",
    "Goodwill credit for the 2026-02-14 upstream outage (incident INC-4471)",
]


def forty(text: str) -> str:
    assert len(text) <= 40, text
    return text


def email(first: str, last: str, domain: str) -> str:
    """A 40-character address: as long as the dashboard must show."""
    room = 39 - len(domain)
    local = f"{first}.{last}"[:room].rstrip(".-")
    local += "".join(str(n % 10) for n in range(room - len(local)))
    address = f"{local}@{domain}"
    assert len(address) == 40, address
    return address


def models_file() -> dict[str, Any]:
    models = []
    for n, (model_id, category, endpoints, price) in enumerate(MODELS):
        deployments = [{"provider": PROVIDERS[n % 2]["name"], "model": model_id.split("/")[-1] + "-served"}]
        if n % 3 == 0:
            deployments.append({"provider": "local-mock", "model": "mock-" + model_id.lower(), "weight": 3})
        entry: dict[str, Any] = {
            "id": model_id,
            "category": category,
            "endpoints": endpoints,
            "deployments": deployments,
            "price": price,
        }
        if n % 4 == 3:
            entry["max_output_tokens"] = 32_768
        models.append(entry)
    return {"providers": PROVIDERS, "models": models}


@dataclass
class Seeded:
    account_id: str
    accounts: dict[str, str]  # id -> name
    key_ids: list[str]
    operator_email: str
    operator_session: str  # the cookie of the operator's session
    request_ids: dict[str, str] = field(default_factory=dict)  # a request of each unit: unit -> request id
    member_link: str = ""  # an unspent one-time link (the set-password page)


def _usage(rng: random.Random, account_id: str, key_id: str, now: datetime, n: int) -> UsageRow:
    model_id, _, endpoints, price = MODELS[rng.randrange(len(MODELS))]
    p = {k: Decimal(repr(v)) for k, v in price.items()}
    endpoint = rng.choice(endpoints)
    prompt = completion = quantity = 0
    unit = None
    if endpoint in ("chat", "completions", "responses"):
        prompt, completion = rng.randint(50, 128_000), rng.randint(1, 32_768)
        cost = cost_nano([(prompt, p["input"]), (completion, p.get("output", Decimal(0)))])
    elif endpoint == "embeddings":
        prompt = rng.randint(8, 120_000)
        cost = cost_nano([(prompt, p["input"])])
    elif endpoint == "images":
        quantity, unit = rng.randint(1, 8), "image"
        cost = cost_nano([(quantity, p["image"])], per=ONE)
    elif endpoint == "transcription" and "request" in p and n % 5 == 0:
        quantity, unit = 1, "request"
        cost = cost_nano([(1, p["request"])], per=ONE)
    elif endpoint == "transcription":
        quantity, unit = rng.randint(1_500, 3_600_000), "audio_ms"
        cost = cost_nano([(quantity, p["audio_second"])], per=Decimal(1000))
    else:
        quantity, unit = rng.randint(20, 40_000), "character"
        cost = cost_nano([(quantity, p["characters"])], per=MILLION)
    status = rng.choice([200] * 30 + [400, 429, 499, 502, 503])
    if status >= 400 and status != 499:
        prompt = completion = quantity = cost = 0
        unit = None
    return UsageRow(
        request_id=f"req_{n:04d}{rng.getrandbits(80):020x}",
        account_id=account_id,
        key_id=key_id,
        model=model_id,
        endpoint=endpoint,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_nano=cost,
        status=status,
        latency_ms=rng.choice([rng.randint(90, 4_000), rng.randint(4_000, 185_000)]),
        estimated=status == 200 and n % 23 == 0,
        created_at=now - timedelta(seconds=n * 2_400 + rng.randint(0, 2_000)),
        quantity=quantity,
        unit=unit,
        client_request_id=f"ci-run-2026-11-03T12:44:01Z-batch-{n:06d}-{rng.getrandbits(32):08x}"
        if n % 4 == 0
        else None,
    )


def _refusals(rng: random.Random, account_id: str, key_ids: list[str], now: datetime) -> list[RefusalTally]:
    """Refusals of every code on most keys over the last 30 days, some in the hundreds of thousands."""
    codes = list(REFUSAL_CODES)
    tallies = []
    for n in range(120):
        day = now - timedelta(days=rng.randint(0, 29), minutes=rng.randint(0, 600))
        count = rng.choice([1, 3, 17, 240, 12_345, 987_654])
        key_id = key_ids[n % len(key_ids)]
        tallies.append(RefusalTally(account_id, key_id, day.date(), codes[n % len(codes)], count, day))
    return tallies


async def seed(management: Management) -> Seeded:
    """The whole data set; the gateway is started after it (it loads balances at start)."""
    rng = random.Random(SEED)
    now = datetime.now(UTC)
    admin = Actor(email("ops", "platform-team", "bastion-operators.example"), None, ADDRESSES[0])
    main = await management.create_account(forty(ACCOUNT), 0, admin)
    accounts = {main.id: main.name}
    others = []
    for name in OTHER_ACCOUNTS:
        account = await management.create_account(forty(name), 0, admin)
        accounts[account.id] = account.name
        others.append(account.id)

    expiry = now + timedelta(days=300)
    some_models = [m[0] for m in MODELS[:5]]
    limits: list[dict[str, Any]] = [  # the settings of the ten keys, one of each kind and all at once
        {"rpm": 12_000, "tpm": 2_000_000, "budget_nano": 5_000 * USD, "budget_period": "monthly"}
        | {"max_parallel": 64},
        {"budget_nano": 20_000 * USD, "budget_period": "total", "models": some_models, "expires_at": expiry},
        {"rpm": 600, "tpm": 150_000, "budget_nano": 100 * USD, "budget_period": "daily"},
        {"models": [m[0] for m in MODELS if m[1] == "Embedding"], "max_parallel": 256},
        {"budget_nano": 1_234_567_891_234, "budget_period": "weekly", "expires_at": expiry},
        {"rpm": 3_000_000, "tpm": 900_000_000, "max_parallel": 1_000},
        {"models": [m[0] for m in MODELS if m[1] in ("Transcription", "LLM")][:9], "budget_nano": 750 * USD},
        {"expires_at": now + timedelta(days=3)},
        {"budget_nano": 5 * USD + 123_456_789, "budget_period": "daily", "models": some_models[:2]},
        {},
    ]  # fmt: skip
    key_ids = []
    for name, settings in zip(KEY_NAMES, limits, strict=True):
        key, _ = await management.create_key(main.id, forty(name), actor=admin, **settings)
        key_ids.append(key.id)
    await management.update_key(
        key_ids[2], None, {"budget_nano": 250 * USD, "models": some_models[1:4], "max_parallel": 8}, admin
    )
    await management.revoke_key(key_ids[9], admin)
    other_keys = {}
    for account_id in others:
        key, _ = await management.create_key(account_id, "production", actor=admin)
        other_keys[account_id] = key.id

    rows = [_usage(rng, main.id, key_ids[n % 9 if n % 7 else 0], now, n) for n in range(880)]
    rows += [_usage(rng, a, other_keys[a], now, 880 + n) for n, a in enumerate(others * 7)][:120]
    assert len(rows) == 1_000
    assert await management.store.record_usage(rows) == 1_000
    await management.store.refusals.add(_refusals(rng, main.id, key_ids, now))

    for n, account_id in enumerate([main.id, *others]):
        amount = 25_000 * USD if n == 0 else rng.randint(1, 10**6) * 10**7 + rng.randint(0, 10**7)
        await management.add_credits(account_id, amount, NOTES[n % len(NOTES)], admin)
    await management.add_credits(main.id, 1_500 * USD + 987_654_321, NOTES[1], admin)
    await management.add_credits(main.id, -(12 * USD + 345_678_901), NOTES[2], admin, "adjustment")

    operator_email = email("operations", "on-call", "ops.bastion.example")
    operator_session = await _person(management, operator_email, None)
    domain = "research.northwind.example"
    roles = ["owner", "developer", "developer", "viewer", "viewer", "developer"]
    link = ""
    for n, ((first, last), role) in enumerate(zip(PEOPLE, roles, strict=True)):
        address = email(first, last, domain)
        if n < 4:
            await _person(management, address, main.id, role)
        else:
            _, link = await management.invite_user(address, False, main.id, role, admin)
    for n, account_id in enumerate(others):
        first, last = PEOPLE[n % len(PEOPLE)]
        await _person(management, email(last, first, f"acct{n:02d}.customers.example"), account_id, "owner")
    for address in ADDRESSES:
        await management.store.audit.add(
            Actor(email("unknown", "visitor", domain), None, address), "signin.failed"
        )

    by_unit: dict[str, str] = {}
    for row in rows[:880]:
        by_unit.setdefault(row.unit or "tokens", row.request_id)
    return Seeded(main.id, accounts, key_ids, operator_email, operator_session, by_unit, link)


async def _person(
    management: Management, address: str, account_id: str | None, role: str | None = None
) -> str:
    """An active user (password set, signed in once) with this email; the token of their session."""
    user, link = await management.invite_user(address, account_id is None, account_id, role, TESTS)
    people = management.store.people
    await people.set_password(link, password_hash(), ADDRESSES[1])
    return await people.start_session(user, ADDRESSES[0], "tests")
