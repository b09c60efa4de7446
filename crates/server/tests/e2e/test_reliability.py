"""Memory that comes back: a burst of huge bad requests against the real `kiln serve` leaves
its RSS within 10% of the level before, and the server answers as before."""

import concurrent.futures
import socket
import time

import requests

from conftest import API_KEY, Server

MIB = 1 << 20


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def declared_too_large(port):
    """A 40 MiB body declared, none of it sent: the 413 comes at once."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {API_KEY}\r\n".encode()
            + b"Content-Type: application/json\r\n"
            + f"Content-Length: {40 * MIB}\r\n\r\n".encode()
        )
        return s.recv(12).decode()


def test_rss_returns_after_a_burst_of_huge_bad_requests():
    s = Server()
    try:
        h = {"Authorization": f"Bearer {API_KEY}"}
        url = s.base + "/v1/chat/completions"
        ask = {"messages": [{"role": "user", "content": "What is the capital of France?"}],
               "max_tokens": 16, "temperature": 0}
        first = requests.post(url, headers=h, json=ask).json()["choices"][0]["message"]["content"]
        # Warm the paths the burst takes (parse errors, a long prompt refused) so the level
        # before is a warm server's.
        requests.post(url, headers={**h, "Content-Type": "application/json"}, data=b"{" * 1000)
        requests.post(url, headers=h, json={"messages": [{"role": "user", "content": "w " * 20000}]})
        time.sleep(2)
        before = rss_mib(s.proc.pid)

        truncated = b'{"messages": [{"role": "user", "content": "' + b"a" * (30 * MIB)
        nested = b"[" * (8 * MIB) + b"]" * (8 * MIB)
        prompt = {"messages": [{"role": "user", "content": "lorem ipsum dolor sit amet " * 80000}]}

        def send(kind):
            if kind == "truncated":
                r = requests.post(url, headers={**h, "Content-Type": "application/json"}, data=truncated)
                return r.status_code, 400
            if kind == "nested":
                r = requests.post(url, headers={**h, "Content-Type": "application/json"}, data=nested)
                return r.status_code, 400
            if kind == "prompt":
                r = requests.post(url, headers=h, json=prompt)
                assert r.json()["error"]["code"] == "context_length_exceeded"
                return r.status_code, 400
            return int(declared_too_large(s.port)[9:12]), 413

        kinds = ["truncated", "nested", "prompt", "declared"] * 6
        peak = before
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(send, k) for k in kinds]
            while not all(f.done() for f in futures):
                peak = max(peak, rss_mib(s.proc.pid))
                time.sleep(0.1)
            for f in futures:
                got, want = f.result()
                assert got == want
        deadline = time.time() + 10
        while True:
            time.sleep(0.5)
            after = rss_mib(s.proc.pid)
            if after <= before * 1.10 or time.time() > deadline:
                break
        assert after <= before * 1.10, f"RSS {before:.0f} MiB before, {peak:.0f} at the peak, {after:.0f} after"
        # Nothing else broke: the same greedy answer.
        again = requests.post(url, headers=h, json=ask).json()["choices"][0]["message"]["content"]
        assert again == first
    finally:
        assert s.stop() == 0
