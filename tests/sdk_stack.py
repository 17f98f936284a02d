"""A Bastion for the TypeScript SDK's tests: `python tests/sdk_stack.py` starts one and prints it.

The mock upstream (tests/upstream.py), `bastion serve` on a fresh SQLite database with the admin API on,
and accounts with keys; then one JSON line on stdout describing them, and everything runs until stdin
closes. A small control server lets the Node tests ask what the upstream saw (requests by x-request-id,
connections the client closed) and open gates of `m-gated` streams.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, str(Path(__file__).parent))

import yaml
from conftest import free_port, gateway_models_file, start_gateway, stop_gateway
from provision import account_with_key, migrated, run, sqlite_url
from upstream import MockUpstream

ADMIN_TOKEN = "sdk-tests-admin-token-0123456789"
USD = 10**9


def control_server(upstream: MockUpstream) -> ThreadingHTTPServer:
    class Control(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            request_id = query.get("id", "")
            if url.path == "/requests":
                seen = [r for r in upstream.requests if r.headers.get("x-request-id") == request_id]
                answer: object = {"count": len(seen), "bodies": [r.json for r in seen]}
            elif url.path == "/closed":
                closed = upstream.wait_closed(request_id, float(query.get("timeout", "5")))
                answer = {"closed": closed is not None}
            elif url.path == "/open-gate":
                upstream.open_gate(request_id)
                answer = {"opened": True}
            else:
                self.send_error(404)
                return
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bastion-sdk-tests-"))
    with MockUpstream() as upstream:
        config = workdir / "bastion.yaml"
        models = gateway_models_file(upstream, free_port())
        # The SDK reference's model id, on the built-in mock, so its examples run as written.
        reference_model = {"id": "gpt-oss-120b", "category": "LLM", "price": {"input": 0.08, "output": 0.4}}
        reference_model["deployments"] = [{"provider": "local", "model": "gpt-oss-120b"}]
        models["models"].append(reference_model)  # type: ignore[attr-defined]
        config.write_text(yaml.safe_dump(models))
        database = sqlite_url(workdir)
        run(migrated(database))
        accounts = {
            "main": run(account_with_key(database, "sdk-main", 10**6 * USD, rpm=1_000_000, tpm=10**9)),
            "broke": run(account_with_key(database, "sdk-broke", 0)),
            "limited": run(account_with_key(database, "sdk-limited", 100 * USD, rpm=1)),
        }
        env = {
            "BASTION_DATABASE_URL": database,
            "BASTION_ADMIN_TOKEN": ADMIN_TOKEN,
            "BASTION_LEDGER_FLUSH_SECONDS": "0.1",
            "BASTION_BREAKER_THRESHOLD": "1000000",
        }
        gateway = start_gateway(config, workdir / "bastion.log", env)
        control = control_server(upstream)
        try:
            description = {
                "baseURL": gateway.base_url,
                "root": gateway.root,
                "adminToken": ADMIN_TOKEN,
                "control": f"http://127.0.0.1:{control.server_address[1]}",
                "deadURL": f"http://127.0.0.1:{free_port()}/v1",
                "accounts": {name: {"id": a[0], "key": a[2]} for name, a in accounts.items()},
                "log": str(workdir / "bastion.log"),
            }
            print(json.dumps(description), flush=True)
            sys.stdin.read()  # until the test runner closes it (or dies)
        finally:
            control.shutdown()
            stop_gateway(gateway)
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
