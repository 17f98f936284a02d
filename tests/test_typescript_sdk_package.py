"""The TypeScript SDK as a new user gets it: packed (`npm run pack`), installed from the tarball alone into
an empty project with `npm install --offline`, compiled with that project's own tsc (strict; module
resolution node16 and bundler), and run against a real `bastion serve`.

tests/sdk_package/consumer.ts holds the seed reference's examples, the everyday `openai` lines that must
compile (`message.content ?? ""`, `.toUpperCase()` after a null check), a type assertion that a response
message's `content` is `string | null`, and the calls of the spend controls.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from conftest import Gateway, gateway_models_file, start_gateway, stop_gateway
from provision import account_with_key, migrated, run, sqlite_url
from upstream import MockUpstream

from bastion.db.store import Store
from bastion.money import NANO_PER_USD

SDK = Path(__file__).resolve().parents[1] / "sdk" / "typescript"
CONSUMER = Path(__file__).resolve().parent / "sdk_package" / "consumer.ts"
CREDIT = 5 * NANO_PER_USD
COMPILER = {
    "strict": True,
    "target": "ES2022",
    "lib": ["ES2022", "DOM", "DOM.Iterable"],
    "types": [],
    "skipLibCheck": False,
    "noUncheckedIndexedAccess": True,
}


def npm(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["npm", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"npm {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("npm") is None:
        pytest.skip("Node.js and npm are not installed (the SDK needs Node 18+)")
    if not (SDK / "node_modules" / "typescript").exists():
        npm("ci", "--no-audit", "--no-fund", cwd=SDK)
    out = tmp_path_factory.mktemp("packed")
    npm("run", "pack", "--", "--pack-destination", str(out), cwd=SDK)
    (packed,) = out.glob("*.tgz")
    assert packed.name == "qubittron-bastion-sdk-0.1.0.tgz"
    return packed


def test_the_packed_package_has_no_dependency_and_its_declarations_import_only_themselves(
    tarball: Path,
) -> None:
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
        manifest = json.load(archive.extractfile("package/package.json"))  # type: ignore[arg-type]
        sources = {
            # (comments may show imports: the examples in the docs)
            name: re.sub(r"/\*.*?\*/", "", archive.extractfile(name).read().decode(), flags=re.S)  # type: ignore[union-attr]
            for name in names
            if name.endswith((".js", ".d.ts"))
        }
    for field in ("dependencies", "peerDependencies", "optionalDependencies", "bundleDependencies"):
        assert field not in manifest, f"the packed package.json has {field}: {manifest[field]}"
    assert "package/dist/esm/index.d.ts" in names and "package/dist/cjs/index.d.ts" in names
    assert "package/dist/esm/wire.d.ts" in names  # the wire types ship inside the SDK
    for name, source in sources.items():
        for line in source.splitlines():
            for quote in ('from "', 'require("', 'import("'):
                if quote in line:
                    specifier = line.split(quote, 1)[1].split('"', 1)[0]
                    assert specifier.startswith("."), f"{name} imports {specifier!r}: {line}"


def test_npm_publish_dry_run_passes(tarball: Path) -> None:
    result = npm("publish", "--dry-run", "--workspace", "@qubittron/bastion-sdk", cwd=SDK)
    assert "@qubittron/bastion-sdk@0.1.0" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def served(
    upstream: MockUpstream, blackhole_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, str, str, str]]:
    workdir = tmp_path_factory.mktemp("sdk-package-gateway")
    models = gateway_models_file(upstream, blackhole_port)
    price = {"input": 1, "output": 2}
    for public, upstream_name in (("gpt-oss-120b", "echo"), ("slow-model", "slow")):
        deployment = {"provider": "up", "model": upstream_name}
        models["models"].append(
            {"id": public, "category": "LLM", "deployments": [deployment], "price": price}
        )  # type: ignore[attr-defined]
    config = workdir / "bastion.yaml"
    config.write_text(yaml.safe_dump(models))
    database = sqlite_url(workdir)
    run(migrated(database))
    _, key_id, key = run(account_with_key(database, "sdk-package", CREDIT))
    gateway = start_gateway(
        config,
        workdir / "bastion.log",
        {"BASTION_DATABASE_URL": database, "BASTION_LEDGER_FLUSH_SECONDS": "0.1"},
    )
    yield gateway, database, key_id, key
    stop_gateway(gateway)


@pytest.fixture(scope="module")
def project(tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty project with the tarball and TypeScript installed, offline."""
    root = tmp_path_factory.mktemp("new-project")
    (root / "package.json").write_text(json.dumps({"name": "new-project", "private": True, "type": "module"}))
    # TypeScript from a tarball too (packed from the workspace's copy): nothing comes from the registry.
    npm("pack", str(SDK / "node_modules" / "typescript"), "--pack-destination", str(tarball.parent), cwd=root)
    (typescript,) = tarball.parent.glob("typescript-*.tgz")
    npm("install", "--offline", "--no-audit", "--no-fund", str(tarball), str(typescript), cwd=root)
    assert not (root / "node_modules" / "@qubi_bastion").exists()
    shutil.copy(CONSUMER, root / "consumer.ts")
    return root


@pytest.mark.parametrize("resolution", ["node16", "bundler"])
def test_the_seed_examples_compile_in_a_new_project(project: Path, resolution: str) -> None:
    module = "node16" if resolution == "node16" else "esnext"
    config = {
        "compilerOptions": COMPILER | {"module": module, "moduleResolution": resolution, "noEmit": True}
    }
    (project / f"tsconfig.{resolution}.json").write_text(json.dumps(config))
    tsc = project / "node_modules" / ".bin" / "tsc"
    result = subprocess.run(
        [str(tsc), "-p", f"tsconfig.{resolution}.json"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_installed_sdk_runs_against_bastion(project: Path, served: tuple[Gateway, str, str, str]) -> None:
    gateway, database, key_id, key = served
    config = {
        "compilerOptions": COMPILER | {"module": "node16", "moduleResolution": "node16", "outDir": "out"}
    }
    (project / "tsconfig.json").write_text(json.dumps(config))
    tsc = project / "node_modules" / ".bin" / "tsc"
    built = subprocess.run([str(tsc)], cwd=project, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stdout + built.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUBITTRON_", "BASTION_"))}
    env |= {"QUBITTRON_API_KEY": key, "QUBITTRON_BASE_URL": gateway.base_url}
    ran = subprocess.run(
        ["node", "out/consumer.js"], cwd=project, capture_output=True, text=True, timeout=120, env=env
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    said: dict[str, object] = {}
    for line in ran.stdout.splitlines():
        if line.startswith("{"):
            said |= json.loads(line)
    assert "failed" not in said, said
    assert said["types"] == [True, True]
    answer = said["answer"]
    assert isinstance(answer, dict) and answer["content"] and answer["total"] > 0
    assert said["upper"] == str(answer["content"]).upper()
    assert "stream_ended" in said and str(said["stream_ended"]).startswith("req_")
    assert said["abort"] == "APIUserAbortError"
    assert said["invalid_key"] == ["AuthenticationError", 401]

    async def ledger() -> list[object]:
        store = Store.from_url(database)
        try:
            return list(await store.usage(key_id=key_id, limit=100))
        finally:
            await store.close()

    records = {r.request_id: r for r in run(ledger())}  # type: ignore[attr-defined]
    meta = said["meta"]
    assert isinstance(meta, dict)
    plain = records[meta["request_id"]]
    assert Decimal(meta["cost_usd"]) * NANO_PER_USD == plain.cost_nano > 0  # type: ignore[attr-defined]
    streamed = said["record"]
    assert isinstance(streamed, dict)
    mine = records[streamed["id"]]
    assert streamed["id"] == said["stream_ended"] and streamed["status"] == 200
    assert (streamed["cost_nano"], streamed["completion_tokens"]) == (mine.cost_nano, mine.completion_tokens)  # type: ignore[attr-defined]
    assert streamed["recovered"] is False
    key_status = said["key"]
    assert isinstance(key_status, dict) and key_status["id"] == key_id
    spent = sum(r.cost_nano for r in records.values())  # type: ignore[attr-defined]
    assert len(records) == 3  # the answer, the stream, the aborted stream (the invalid key: none)
    assert Decimal(key_status["spend_usd"]) * NANO_PER_USD == spent
    assert Decimal(key_status["account_available_credit_usd"]) * NANO_PER_USD == CREDIT - spent
