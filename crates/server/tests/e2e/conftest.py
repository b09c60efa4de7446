"""Starts the real `kiln` binary (KILN_BIN) on the default model for the end-to-end tests."""

import json
import os
import socket
import subprocess
import time
import urllib.request

import pytest

API_KEY = "kiln-e2e-key"
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *extra, api_key=API_KEY, log="warn"):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = [os.environ["KILN_BIN"], "serve", "--port", str(self.port), *extra]
        if api_key:
            args += ["--api-key", api_key]
        env = dict(os.environ, KILN_LOG=log)
        self.log = open(os.path.join(os.environ.get("KILN_E2E_LOGS", "/tmp"), f"kiln-e2e-{self.port}.log"), "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 300
        while True:
            assert self.proc.poll() is None, f"kiln exited early; see {self.log.name}"
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except Exception:
                pass
            assert time.time() < deadline, "kiln did not become healthy"
            time.sleep(0.2)

    def stop(self):
        self.proc.terminate()
        code = self.proc.wait(timeout=60)
        self.log.close()
        return code


@pytest.fixture(scope="session")
def server():
    s = Server("--max-body-bytes", "1MiB")
    yield s
    assert s.stop() == 0, "kiln did not shut down cleanly on SIGTERM"


@pytest.fixture(scope="session")
def golden():
    with open(os.path.join(ROOT, "testdata", "smollm2", "golden_smollm2.json")) as f:
        return json.load(f)
