"""The models file: what loads, and one clear message (file, key path, problem) for what does not."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from bastion.config import ConfigError, Settings, load_catalog

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "bastion.example.yaml"
SEED_MODELS = [
    "gpt-oss-120b",
    "gpt-oss-20b",
    "Llama-3.1-8B-Instruct",
    "Meta-Llama-3_3-70B-Instruct",
    "Qwen3-32B",
    "Mistral-7B-Instruct-v0.3",
    "Mistral-Small-3.2-24B-Instruct-2506",
    "Mistral-Nemo-Instruct-2407",
    "Qwen3-Coder-30B-A3B-Instruct",
    "Qwen2.5-VL-72B-Instruct",
    "Qwen3Guard-Gen-8B",
    "Qwen3Guard-Gen-0.6B",
]

GOOD = {
    "providers": [
        {"name": "ovh", "base_url": "https://example.invalid/v1", "api_key": "${TEST_OVH_KEY}"},
        {"name": "local", "type": "mock"},
    ],
    "models": [
        {
            "id": "gpt-oss-120b",
            "category": "LLM",
            "deployments": [
                {"provider": "ovh", "model": "gpt-oss-120b", "weight": 3},
                {"provider": "local", "model": "m"},
            ],
            "price": {"input": 0.08, "output": 0.4},
            "max_output_tokens": 4096,
        },
        {
            "id": "bge-m3",
            "category": "Embedding",
            "deployments": [{"provider": "ovh", "model": "bge-m3"}],
            "price": {},
        },
    ],
}


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_a_good_file_loads_with_exact_prices_and_default_endpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_OVH_KEY", "sk-from-env")
    catalog = load_catalog(_write(tmp_path, GOOD))
    model = catalog.models["gpt-oss-120b"]
    assert model.price.input == Decimal("0.08") and model.price.output == Decimal("0.4")
    assert model.endpoints == ("chat", "completions")
    assert catalog.models["bge-m3"].endpoints == ("embeddings",)
    assert [d.weight for d in model.deployments] == [3, 1]
    provider = catalog.providers["ovh"]
    assert provider.api_key is not None and provider.api_key.get_secret_value() == "sk-from-env"
    assert "sk-from-env" not in repr(provider)


def test_the_example_file_covers_the_seed_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVH_API_KEY", "x")
    catalog = load_catalog(EXAMPLE)
    for model in [*SEED_MODELS, "bge-m3"]:
        assert model in catalog.models, model
    assert catalog.models["Qwen3-Coder-30B-A3B-Instruct"].category == "Code"
    assert catalog.models["Qwen2.5-VL-72B-Instruct"].category == "Vision"
    assert catalog.models["Qwen3Guard-Gen-8B"].category == "Safety"
    assert catalog.models["bge-m3"].serves("embeddings") and not catalog.models["bge-m3"].serves("chat")
    kinds = {m.category: m.endpoints for m in catalog.models.values()}
    assert kinds["Image"] == ("images",) and kinds["Transcription"] == ("transcription",)
    assert kinds["TTS"] == ("tts",)
    assert catalog.models["gpt-oss-120b"].serves("responses")
    assert catalog.models["nvr-tts-en-us"].price.characters == 15
    assert catalog.models["whisper-large-v3"].price.audio_second == Decimal("0.00004")


def test_a_reader_of_the_models_alone_needs_no_provider_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `keys create --models` checks against, where the providers' keys are not set."""
    monkeypatch.delenv("TEST_OVH_KEY", raising=False)
    path = _write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match="TEST_OVH_KEY is not set"):
        load_catalog(path)
    catalog = load_catalog(path, require_env=False)
    assert set(catalog.models) == {m["id"] for m in GOOD["models"]}  # type: ignore[attr-defined]
    assert catalog.providers["ovh"].api_key is not None
    assert catalog.providers["ovh"].api_key.get_secret_value() == "${TEST_OVH_KEY}"  # kept as written


def _broken(tmp_path: Path, mutate: object) -> ConfigError:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    if callable(mutate):
        mutate(data)
        path = _write(tmp_path, data)
    else:
        path = _write(tmp_path, mutate)
    os.environ["TEST_OVH_KEY"] = "x"
    with pytest.raises(ConfigError) as caught:
        load_catalog(path)
    assert str(path) in str(caught.value)
    return caught.value


BROKEN = [
    ("providers:\n  - name: a\n   bad: indent\n", "line 3, column 4", "invalid YAML"),
    ("- just\n- a list\n", "", "must be a mapping"),
    (
        lambda d: d["models"][0]["deployments"][0].update(provider="nope"),
        "models[0].deployments[0].provider",
        "unknown provider 'nope'",
    ),
    (lambda d: d["models"].append(dict(d["models"][1])), "models[2].id", "duplicate model id 'bge-m3'"),
    (
        lambda d: d["providers"].append(dict(d["providers"][1])),
        "providers[2].name",
        "duplicate provider name",
    ),
    (
        lambda d: d["providers"][0].update(api_key="${TEST_UNSET_VAR}"),
        "providers[0].api_key",
        "environment variable TEST_UNSET_VAR is not set",
    ),
    (
        lambda d: d["providers"][0].update(api_key="sk-literal"),
        "providers[0].api_key",
        "environment variable reference",
    ),
    (
        lambda d: d["providers"][0].update(base_url="ftp://x"),
        "providers[0](ovh).base_url",
        "not an http(s) URL",
    ),
    (
        lambda d: d["providers"][0].update(base_url="not a url"),
        "providers[0](ovh).base_url",
        "not an http(s) URL",
    ),
    (
        lambda d: d["providers"][0].pop("base_url"),
        "providers[0].base_url",
        "required for a provider of type 'openai'",
    ),
    (
        lambda d: d["models"][0].update(category="Chatbot"),
        "models[0](gpt-oss-120b).category",
        "Input should be",
    ),
    (
        lambda d: d["models"][0].update(endpoints=["chat", "telepathy"]),
        "models[0](gpt-oss-120b).endpoints[1]",
        "Input should be",
    ),
    (
        lambda d: d["models"][0].update(deployments=[]),
        "models[0](gpt-oss-120b).deployments",
        "at least 1 item",
    ),
    (
        lambda d: d["models"][0]["deployments"][0].update(weight=-1),
        "models[0](gpt-oss-120b).deployments[0].weight",
        "greater than or equal to 0",
    ),
    (
        lambda d: [x.update(weight=0) for x in d["models"][0]["deployments"]],
        "models[0].deployments",
        "weight above 0",
    ),
    (
        lambda d: d["models"][0]["price"].update(input=-1),
        "models[0](gpt-oss-120b).price.input",
        "greater than or equal to 0",
    ),
    (lambda d: d["models"][0].pop("price"), "models[0](gpt-oss-120b).price", "Field required"),
    (
        lambda d: d["models"][0].update(colour="red"),
        "models[0](gpt-oss-120b).colour",
        "Extra inputs are not permitted",
    ),
]


@pytest.mark.parametrize(("mutate", "path", "problem"), BROKEN, ids=[b[1] or b[2] for b in BROKEN])
def test_broken_files_name_the_file_the_path_and_the_problem(
    tmp_path: Path, mutate: object, path: str, problem: str
) -> None:
    error = _broken(tmp_path, mutate)
    assert error.path == path
    assert problem in error.problem


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_catalog(tmp_path / "absent.yaml")
    assert "absent.yaml" in str(caught.value) and "cannot read" in str(caught.value)


def test_the_catalog_carries_the_sha256_of_the_files_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_OVH_KEY", "sk-from-env")
    path = _write(tmp_path, GOOD)
    first = load_catalog(path).sha256
    assert first == hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_bytes(path.read_bytes() + b"# a comment: the same models, another version\n")
    second = load_catalog(path)
    assert second.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() != first
    monkeypatch.setenv("TEST_OVH_KEY", "sk-rotated")  # what the file names, not what it resolves to
    assert load_catalog(path).sha256 == second.sha256


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = _write(tmp_path, "")
    path.write_bytes(b"providers: [\xff]\n")
    with pytest.raises(ConfigError) as caught:
        load_catalog(path)
    assert str(caught.value) == f"{path}: not UTF-8 text (byte 12)"


def test_settings_come_from_bastion_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("BASTION_CONFIG", "/etc/bastion/models.yaml")
    settings = Settings()
    assert settings.max_body_bytes == 2048
    assert settings.config == Path("/etc/bastion/models.yaml")
    assert Settings.model_fields["max_body_bytes"].default == 10 * 1024 * 1024


def _bastion(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_config_check_prints_what_it_loaded_without_secrets() -> None:
    result = _bastion("config", "check", str(EXAMPLE), env={"OVH_API_KEY": "sk-should-not-print"})
    assert result.returncode == 0, result.stderr
    assert "Qwen3-Coder-30B-A3B-Instruct" in result.stdout and "bge-m3" in result.stdout
    assert "sk-should-not-print" not in result.stdout


def test_serve_with_a_broken_file_stops_with_one_message(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    data["models"][0]["deployments"][0]["provider"] = "nope"
    path = _write(tmp_path, data)
    result = _bastion("serve", "--port", "0", "--config", str(path), env={"TEST_OVH_KEY": "x"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and "models[0].deployments[0].provider" in lines[0]
    assert "unknown provider 'nope'" in lines[0]


def test_serve_without_a_models_file_points_to_the_demo(tmp_path: Path) -> None:
    result = _bastion("serve", "--config", str(tmp_path / "bastion.yaml"))
    assert result.returncode == 2
    assert "bastion serve --demo" in result.stderr
