"""End-to-end on a vision model: `kiln serve --model testdata/tiny-smolvlm` (a tiny random
SmolVLM / Idefics3, served as `pixtral-12b-2409` so the providers' vision snippets run unchanged)
driven by the official `openai` client and requests. The weights are random, so the tests check
structure, token counts (the golden `n_tokens` of transformers' processor), greedy determinism
and the golden greedy ids, never meaning. Images come from https (a local trustme-signed server),
http, base64 data URLs and file://. Every image that cannot be had (SSRF, redirects, size, time,
not an image, decompression bomb, bad status, credentials, local files) is a 400 `invalid_image`
naming the part and the reason, and a refused host is never connected to (counting listeners
prove it); what validation catches first (too many images, unsupported URL kinds, images outside
user turns) is a 400 naming the field. The prefix cache shares text blocks between different
images but never a block holding image tokens."""

import asyncio
import base64
import json
import os
import socket
import ssl
import struct
import subprocess
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO

import openai
import pytest
import requests
import trustme
from openai import AsyncOpenAI, OpenAI
from PIL import Image

from conftest import API_KEY, ROOT, Server

MODEL = "pixtral-12b-2409"
TINY = os.path.join(ROOT, "testdata", "tiny-smolvlm")
BLOCK = 16  # kiln serve's default --block-size
IMG = "messages[0].content[1].image_url"  # the param of the image in [text, image] content


# --- Helpers --------------------------------------------------------------------------------------


def client(server, **kw):
    return OpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0, **kw)


def auth():
    return {"Authorization": f"Bearer {API_KEY}"}


def png_bytes(name):
    with open(os.path.join(TINY, name), "rb") as f:
        return f.read()


def data_url(name):
    return "data:image/png;base64," + base64.b64encode(png_bytes(name)).decode()


def image_part(url):
    return {"type": "image_url", "image_url": {"url": url}}


def text_part(text):
    return {"type": "text", "text": text}


def encode_image(img):
    # Scaleway's base64 snippet, as the guide writes it.
    buffered = BytesIO()
    img.save(buffered, format="JPEG")
    encoded_string = base64.b64encode(buffered.getvalue()).decode("utf-8")
    return encoded_string


def jpeg_of(name):
    """The bytes Scaleway's snippet base64-encodes for the PNG `name`."""
    return base64.b64decode(encode_image(Image.open(os.path.join(TINY, name))))


def encoded(name, fmt):
    """The PNG `name` re-encoded by Pillow as `fmt`."""
    out = BytesIO()
    Image.open(os.path.join(TINY, name)).save(out, format=fmt)
    return out.getvalue()


def chat(server, content, **kw):
    """POSTs one user message with `content`; returns the raw response."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 4,
            "temperature": 0, **kw}
    return requests.post(server.base + "/v1/chat/completions", headers=auth(), json=body,
                         timeout=60)


def error_of(resp, status=400):
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["type"] == "invalid_request_error", body
    return body["error"]


def image_error(resp, param=IMG):
    """The 400 `invalid_image` envelope naming `param`; returns the reason after `param: `."""
    err = error_of(resp)
    assert err["code"] == "invalid_image", err
    assert err["param"] == param, err
    assert err["message"].startswith(param + ": "), err
    return err["message"][len(param) + 2:]


def metric(server, name):
    text = requests.get(server.base + "/metrics", timeout=10).text
    # One model served: its one series (engine metrics carry a `model` label).
    line = next(l for l in text.splitlines() if l.startswith((name + " ", name + "{")))
    return float(line.split()[-1])


def read_log(server):
    server.log.flush()
    with open(server.log.name) as f:
        return f.read()


def tokenize(prompt):
    """`kiln tokenize --prompt` on the tiny model: special-token strings are parsed."""
    out = subprocess.run(
        [os.environ["KILN_BIN"], "tokenize", "--model", TINY, "--json", "--prompt", prompt],
        capture_output=True, text=True, check=True, timeout=60,
    )
    return json.loads(out.stdout)["n_tokens"]


# --- Golden expectations ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def golden():
    with open(os.path.join(TINY, "golden.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def expansion(golden):
    """Each golden image's `<image>` expansion (image splitting on, as the processor config says);
    it depends only on the image's size, so a JPEG of a PNG expands alike."""
    out = {}
    for case in golden["cases"]:
        if not case["processor_kwargs"]:
            for image in case["images"]:
                out[image["file"]] = image["expansion"]
    return out


def render(messages, image="<image>"):
    """The model's chat template (chat_template.jinja) with the generation prompt, for OpenAI
    messages; image parts become `image`."""
    out = "<|im_start|>"
    for m in messages:
        parts = m["content"] if isinstance(m["content"], list) else [text_part(m["content"])]
        out += m["role"].capitalize() + (":" if parts[0]["type"] == "image_url" else ": ")
        for p in parts:
            out += p["text"] if p["type"] == "text" else image
        out += "<end_of_utterance>\n"
    return out + "Assistant:"


def expected_tokens(expansion, messages, images):
    """Prompt tokens of `messages` whose image parts show the golden files `images`, in order."""
    prompt = render(messages, image="\0")
    assert prompt.count("\0") == len(images)
    for name in images:
        prompt = prompt.replace("\0", expansion[name], 1)
    return tokenize(prompt)


def openai_messages(case):
    """A golden case's messages as an OpenAI request: image parts as PNG data URLs, in order;
    transformers' `do_image_splitting=False` is Idefics3's `detail: low` (the global image only)."""
    low = case["processor_kwargs"] == {"do_image_splitting": False}
    assert low or not case["processor_kwargs"], case["processor_kwargs"]
    out = []
    for m in case["messages"]:
        parts = [image_part(data_url(p["image"])) if p["type"] == "image" else text_part(p["text"])
                 for p in m["content"]]
        for p in parts:
            if low and p["type"] == "image_url":
                p["image_url"]["detail"] = "low"
        out.append({"role": m["role"], "content": parts})
    return out


# --- Local media servers ------------------------------------------------------------------------


class Tripwire:
    """A TCP listener that only counts the connections it gets."""

    def __init__(self, host, port=0):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.count = 0
        try:
            self.sock.bind((host, port))
        except OSError:
            # A machine without IPv6 on loopback (Docker's default): nothing can connect to the
            # address at all, so a free IPv4 port number stands in and the count stays 0.
            self.sock.close()
            self.sock = None
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
            return
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.count += 1
            conn.close()

    def close(self):
        if self.sock is not None:
            self.sock.close()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width, height):
    """A ~100-byte PNG whose header claims width x height RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096, 9)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


class MediaHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.hits[self.path] = srv.hits.get(self.path, 0) + 1
        route = srv.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        try:
            route(self)
        except OSError:
            pass  # the fetcher hung up (size cap, timeout): expected

    def send_body(self, body, content_type="image/png", length=True):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not length:
            for i in range(0, len(body), 16384):
                self.wfile.write(body[i:i + 16384])
                self.wfile.flush()
        else:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


class MediaServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, routes, tls=None):
        super().__init__(("127.0.0.1", 0), MediaHandler)
        self.routes, self.hits, self.lock, self.connections = routes, {}, threading.Lock(), 0
        if tls:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.port = self.server_address[1]
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def verify_request(self, request, client_address):
        with self.lock:
            self.connections += 1
        return True

    def stop(self):
        self.shutdown()
        self.server_close()


def slow(handler):
    """Headers at once, then one byte every 0.1 s: far slower than --media-timeout 2."""
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    for _ in range(150):
        handler.wfile.write(b"\x89")
        handler.wfile.flush()
        time.sleep(0.1)


def redirect_to(url):
    def route(handler):
        handler.send_response(302)
        if url is not None:
            handler.send_header("Location", url)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return route


@pytest.fixture(scope="module")
def far():
    """A listener on 127.0.0.2, where a redirect from the allowed 127.0.0.1 points."""
    t = Tripwire("127.0.0.2")
    yield t
    t.close()


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    authority = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, str(path)


@pytest.fixture(scope="module")
def https_media(ca):
    """https://127.0.0.1:PORT with a trustme certificate for the IP; serves picsum's path."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca[0].issue_cert("127.0.0.1").configure_cert(ctx)
    jpeg = jpeg_of("large_300x200.png")
    s = MediaServer({"/id/32/512/512": lambda h: h.send_body(jpeg, "image/jpeg")}, tls=ctx)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def media(far):
    """Plain http on 127.0.0.1 (allow-listed on the `vision` server), one path per case."""
    big = png_bytes("small_20x14.png") + b"\0" * (200 << 10)
    html = b"<!doctype html><html><body><p>Not a picture.</p></body></html>\n"
    s = MediaServer({
        "/small.png": lambda h: h.send_body(png_bytes("small_20x14.png")),
        "/redirect.png": redirect_to(f"http://127.0.0.2:{far.port}/x.png"),
        "/big.png": lambda h: h.send_body(big),
        "/big-unsized.png": lambda h: h.send_body(big, length=False),
        "/slow.png": slow,
        "/page.png": lambda h: h.send_body(html),
        "/bomb.png": lambda h: h.send_body(png_bomb(30000, 30000)),
        "/bomb-pixels.png": lambda h: h.send_body(png_bomb(8000, 8000)),
        "/x.png": lambda h: h.send_body(png_bytes("small_20x14.png")),
        "/hop.png": redirect_to("/hop-target.png"),
        "/hop-target.png": lambda h: h.send_body(png_bytes("small_20x14.png")),
        "/loop.png": redirect_to("/loop.png"),
        "/to-credentials.png": redirect_to("http://user:secret@127.0.0.1:1/x.png"),
        "/to-file.png": redirect_to("file:///etc/passwd"),
        "/to-data.png": redirect_to(data_url("small_20x14.png")),
        "/to-nowhere.png": redirect_to(None),
        "/bitmap.png": lambda h: h.send_body(encoded("small_20x14.png", "BMP"), "image/bmp"),
    })
    yield s
    s.stop()


@pytest.fixture(scope="module")
def rogue_https():
    """https://127.0.0.1:PORT under a CA that no kiln server trusts."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(ctx)
    s = MediaServer({"/x.png": lambda h: h.send_body(png_bytes("small_20x14.png"))}, tls=ctx)
    yield s
    s.stop()


# --- Servers ------------------------------------------------------------------------------------


def tiny(*extra, **kw):
    return Server("--model", TINY, "--served-model-name", MODEL, *extra, **kw)


@pytest.fixture(scope="module")
def vision(ca, https_media, media):
    """127.0.0.1 allow-listed, the test CA trusted, 100 KiB / 2 s caps, file:// under TINY, an
    f32 KV cache so greedy ids are transformers' own, and the fetcher's debug lines logged."""
    s = tiny("--allow-media-host", "127.0.0.1", "--media-ca-file", ca[1],
             "--media-max-bytes", "100KiB", "--media-timeout", "2",
             "--allowed-local-media-path", TINY, "--kv-cache-dtype", "f32",
             log="warn,kiln_gateway=debug")
    yield s
    assert s.stop() == 0, "kiln did not shut down cleanly on SIGTERM"


@pytest.fixture(scope="module")
def strict():
    """The default media policy: no allow-list, no file://."""
    s = tiny()
    yield s
    assert s.stop() == 0, "kiln did not shut down cleanly on SIGTERM"


@pytest.fixture(scope="module")
def tripwires():
    v4 = Tripwire("127.0.0.1")
    v6 = Tripwire("::1")
    yield v4, v6
    v4.close()
    v6.close()


# --- Scaleway ------------------------------------------------------------------------------------


def test_scaleway_vision_request_with_an_https_url(vision, https_media, expansion):
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this image?"},
                {"type": "image_url", "image_url": {"url": https_media.base + "/id/32/512/512"}},
            ],
        }
    ]
    before = https_media.hits.get("/id/32/512/512", 0)
    response = client(vision).chat.completions.create(model=MODEL, messages=messages)
    choice = response.choices[0]
    assert response.model == MODEL and response.object == "chat.completion"
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert response.usage.prompt_tokens == expected_tokens(
        expansion, messages, ["large_300x200.png"])
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens)
    assert response.usage.total_tokens <= 2048
    assert https_media.hits["/id/32/512/512"] == before + 1


def test_scaleway_base64_snippet(vision, https_media, expansion):
    img = Image.open(os.path.join(TINY, "large_300x200.png"))
    base64_img = encode_image(img)
    image_url = f"data:image/jpeg;base64,{base64_img}"
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "What is this image?"},
        {"type": "image_url", "image_url": {"url": image_url}},
    ]}]
    response = client(vision).chat.completions.create(model=MODEL, messages=messages)
    assert isinstance(response.choices[0].message.content, str)
    assert response.choices[0].finish_reason in ("stop", "length")
    assert response.usage.prompt_tokens == expected_tokens(
        expansion, messages, ["large_300x200.png"])
    # The https server sends these very bytes: the same pixels, the same greedy answer.
    c = client(vision)
    greedy = [
        c.chat.completions.create(
            model=MODEL, temperature=0, max_tokens=12,
            messages=[{"role": "user", "content": [text_part("What is this image?"),
                                                   image_part(url)]}],
        ).choices[0].message.content
        for url in (image_url, https_media.base + "/id/32/512/512")
    ]
    assert greedy[0] == greedy[1] and greedy[0]


def test_scaleway_stream(vision, https_media):
    content = [
        {"type": "text", "text": "What is this image?"},
        {"type": "image_url", "image_url": {"url": https_media.base + "/id/32/512/512"}},
    ]
    response = client(vision).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], stream=True,
    )
    parts, ids, finish = [], set(), None
    for chunk in response:
        assert chunk.object == "chat.completion.chunk" and chunk.model == MODEL
        ids.add(chunk.id)
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        if chunk.choices:
            finish = chunk.choices[0].finish_reason or finish
    assert len(ids) == 1 and finish in ("stop", "length")
    # Greedy, the stream is the non-streamed answer piece by piece.
    c = client(vision)
    full = c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], temperature=0, max_tokens=16,
    ).choices[0].message.content
    stream = c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], temperature=0, max_tokens=16,
        stream=True,
    )
    assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == full
    assert full


def test_scaleway_async_stream(vision, https_media):
    client_async = AsyncOpenAI(base_url=vision.base + "/v1", api_key=API_KEY, max_retries=0)

    async def main():
        stream = await client_async.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": [
                {"type": "text", "text": "What is this image?"},
                {"type": "image_url", "image_url": {"url": https_media.base + "/id/32/512/512"}},
            ]}],
            stream=True,
        )
        got = []
        async for chunk in stream:
            got.append((chunk.choices[0].delta.content, chunk.choices[0].finish_reason))
        return got

    got = asyncio.run(main())
    assert got and got[-1][1] in ("stop", "length")
    assert all(finish is None for _, finish in got[:-1])
    assert all(isinstance(text, str) for text, _ in got[:-1])


# --- Cloudsway -----------------------------------------------------------------------------------


def test_cloudsway_system_prompt_and_a_lone_image_with_usage(vision, expansion):
    c = OpenAI(base_url=vision.base + "/v1/ai/my-deployment", api_key=API_KEY, max_retries=0)
    messages = [
        {"role": "system", "content": "You are a helpful assistant that describes images."},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url("portrait_26x60.png")}},
        ]},
    ]
    chunks = list(c.chat.completions.create(
        model="", messages=messages, stream=True, stream_options={"include_usage": True},
        max_tokens=512,
    ))
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens > 0
    assert last.usage.prompt_tokens == expected_tokens(expansion, messages, ["portrait_26x60.png"])
    assert 0 < last.usage.completion_tokens <= 512
    assert all(ch.usage is None for ch in chunks[:-1])
    assert {ch.model for ch in chunks} == {MODEL}
    finishes = [ch.choices[0].finish_reason for ch in chunks[:-1] if ch.choices]
    assert finishes[-1] in ("stop", "length")


# --- Golden token counts and greedy ids -----------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["small", "nonsquare", "large", "rgba", "two_images", "two_turns", "unsplit"])
def test_golden_prompt_tokens_and_greedy_text(vision, golden, name):
    case = next(c for c in golden["cases"] if c["name"] == name)
    messages = openai_messages(case)
    assert render(messages) == case["prompt"], "the test's template rendering is off"
    r = client(vision).chat.completions.create(
        model=MODEL, messages=messages, temperature=0, max_tokens=len(case["greedy_ids"]),
    )
    # transformers' processor: the same number of prompt tokens, images included.
    assert r.usage.prompt_tokens == case["n_tokens"]
    assert r.usage.completion_tokens == len(case["greedy_ids"])
    assert r.choices[0].message.content == case["greedy_text"]
    assert r.choices[0].finish_reason == "length"


# --- How many images ------------------------------------------------------------------------------


def test_thirteen_images_are_refused_before_any_fetch(vision, media):
    before = media.connections
    content = [text_part("count")] + [image_part(media.base + "/small.png")] * 13
    err = error_of(chat(vision, content))
    assert "12" in err["message"] and "13" in err["message"], err
    assert err["param"] == "messages", err
    assert media.connections == before, "images were fetched for a request refused for its count"


def test_exactly_twelve_images_are_served(vision, expansion):
    content = [text_part("How many?")] + [image_part(data_url("small_20x14.png"))] * 12
    r = chat(vision, content)
    assert r.status_code == 200, r.text
    messages = [{"role": "user", "content": content}]
    assert r.json()["usage"]["prompt_tokens"] == expected_tokens(
        expansion, messages, ["small_20x14.png"] * 12)


def test_max_images_per_request_flag(golden):
    s = tiny("--max-images-per-request", "2")
    try:
        content = [text_part("Three?")] + [image_part(data_url("small_20x14.png"))] * 3
        err = error_of(chat(s, content))
        assert "at most 2 images" in err["message"] and "3" in err["message"], err
        case = next(c for c in golden["cases"] if c["name"] == "two_images")
        r = client(s).chat.completions.create(
            model=MODEL, messages=openai_messages(case), temperature=0, max_tokens=2,
        )
        assert r.usage.prompt_tokens == case["n_tokens"]
        spec = requests.get(s.base + "/openapi.json", timeout=10).json()
        assert "at most 2 in the whole request" in spec["components"]["schemas"]["ChatMessage"][
            "description"]
    finally:
        assert s.stop() == 0


# --- SSRF: the default policy ---------------------------------------------------------------------

ALLOW = "which this server does not fetch from (allow it with --allow-media-host)"
NUMERIC = "the URL is not valid: a numeric host must be a dotted-decimal IPv4 address (a.b.c.d)"

REFUSED = [
    ("http://127.0.0.1:{v4}/x.png", ["the address 127.0.0.1 is a loopback address", ALLOW]),
    ("http://localhost:{v4}/x.png",
     ["the host `localhost` resolves to", "a loopback address", ALLOW]),
    ("http://localhost.:{v4}/x.png", ["the host `localhost` resolves to", ALLOW]),
    ("http://[::1]:{v6}/x.png", ["the address ::1 is a loopback address", ALLOW]),
    ("http://10.0.0.1/x.png", ["the address 10.0.0.1 is a private address", ALLOW]),
    ("http://169.254.169.254/latest/meta-data",
     ["the address 169.254.169.254 is a link-local address", "cloud metadata", ALLOW]),
    ("http://100.64.0.1/",
     ["the address 100.64.0.1 is a carrier-grade NAT (shared) address", ALLOW]),
    ("http://[::ffff:127.0.0.1]:{v4}/",
     ["the address ::ffff:127.0.0.1 is an IPv4-mapped form of 127.0.0.1, a loopback address",
      ALLOW]),
    ("http://0.0.0.0:{v4}/", ["the address 0.0.0.0 is the unspecified address", ALLOW]),
    ("http://[::]:{v6}/", ["the address :: is the unspecified address", ALLOW]),
    ("http://[::127.0.0.1]:{v4}/",
     ["IPv4-compatible form of 127.0.0.1, a loopback address", ALLOW]),
    ("http://[64:ff9b::7f00:1]:{v4}/", ["a NAT64 form of 127.0.0.1, a loopback address", ALLOW]),
    ("HTTP://127.0.0.1:{v4}/", ["the address 127.0.0.1 is a loopback address", ALLOW]),
    # Forms getaddrinfo would quietly turn into 127.0.0.1.
    ("http://2130706433:{v4}/", [NUMERIC]),
    ("http://0x7f.0.0.1:{v4}/", [NUMERIC]),
    ("http://0177.0.0.1:{v4}/", [NUMERIC]),
    ("http://127.1:{v4}/", [NUMERIC]),
    ("http://[fe80::1%25lo]:{v6}/", ["IPv6 zone identifiers are not supported"]),
    ("http://127.0.0.1:{v4}@example.com/", ["URLs with credentials"]),
]


@pytest.mark.parametrize("url,reasons", REFUSED, ids=[u for u, _ in REFUSED])
def test_internal_addresses_are_refused_unconnected(strict, tripwires, url, reasons):
    v4, v6 = tripwires
    url = url.format(v4=v4.port, v6=v6.port)
    start = time.monotonic()
    reason = image_error(chat(strict, [text_part("What is this?"), image_part(url)]))
    for want in reasons:
        assert want in reason, reason
    assert time.monotonic() - start < 5, "a refused address was tried before it was refused"
    assert (v4.count, v6.count) == (0, 0), "kiln connected to a refused address"


# --- Fetching from an allow-listed host -----------------------------------------------------------


def test_allow_listed_host_is_fetched(vision, media, golden):
    before = media.hits.get("/small.png", 0)
    r = chat(vision, [image_part(media.base + "/small.png"), text_part("What is in this picture?")])
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == golden["cases"][0]["n_tokens"]
    assert media.hits["/small.png"] == before + 1


def test_redirect_to_an_unlisted_address_is_refused(vision, media, far):
    before = media.hits.get("/redirect.png", 0)
    reason = image_error(chat(vision, [text_part("What is this?"),
                                       image_part(media.base + "/redirect.png")]))
    assert f"after a redirect to `http://127.0.0.2:{far.port}`" in reason, reason
    assert "the address 127.0.0.2 is a loopback address" in reason, reason
    assert media.hits["/redirect.png"] == before + 1
    assert far.count == 0, "kiln followed the redirect to a refused address"


def test_redirects_within_the_allowed_host_are_followed_up_to_three(vision, media, golden):
    before = {p: media.hits.get(p, 0) for p in ("/hop.png", "/hop-target.png", "/loop.png")}
    r = chat(vision, [image_part(media.base + "/hop.png"), text_part("What is in this picture?")])
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == golden["cases"][0]["n_tokens"]
    assert media.hits["/hop.png"] == before["/hop.png"] + 1
    assert media.hits["/hop-target.png"] == before["/hop-target.png"] + 1
    reason = image_error(chat(vision, [text_part("What is this?"),
                                       image_part(media.base + "/loop.png")]))
    assert reason == "too many redirects (more than 3)", reason
    assert media.hits["/loop.png"] == before["/loop.png"] + 4  # the URL and 3 redirects


def test_https_needs_a_trusted_certificate_for_the_host(vision, rogue_https, https_media):
    reason = image_error(chat(vision, [text_part("What is this?"),
                                       image_part(rogue_https.base + "/x.png")]))
    assert reason.startswith(f"the TLS connection to `127.0.0.1:{rogue_https.port}` failed"), reason
    assert rogue_https.hits == {}
    # A trusted certificate, but for 127.0.0.1, not for the name `localhost`.
    before = dict(https_media.hits)
    url = f"https://localhost:{https_media.port}/id/32/512/512"
    reason = image_error(chat(vision, [text_part("What is this?"), image_part(url)]))
    # (Where localhost also resolves to ::1, which is not allow-listed, that refuses it first.)
    assert "the TLS connection to `localhost:" in reason or "::1" in reason, reason
    assert https_media.hits == before


@pytest.mark.parametrize("path,reason", [
    ("/to-credentials.png", "the server redirected to an invalid URL: it contains credentials"),
    ("/to-file.png", "the server redirected to a `file:` URL, which this server does not follow"),
    ("/to-data.png", "the server redirected to a `data:` URL, which this server does not follow"),
    ("/to-nowhere.png", "the server answered 302 Found without a Location header"),
])
def test_redirect_targets_that_are_not_followed(vision, media, path, reason):
    r = chat(vision, [text_part("What is this?"), image_part(media.base + path)])
    assert image_error(r) == reason
    assert "secret" not in r.text


@pytest.mark.parametrize("path", ["/big.png", "/big-unsized.png"])
def test_body_over_media_max_bytes(vision, media, path):
    reason = image_error(chat(vision, [text_part("What is this?"), image_part(media.base + path)]))
    assert reason == "the image is larger than the 100 KiB limit", reason


def test_slow_body_times_out(vision, media):
    start = time.monotonic()
    reason = image_error(chat(vision, [text_part("What is this?"),
                                       image_part(media.base + "/slow.png")]))
    elapsed = time.monotonic() - start
    assert reason == "fetching timed out after 2 s", reason
    assert 1.5 < elapsed < 10, elapsed


def test_html_served_as_an_image(vision, media):
    reason = image_error(chat(vision, [text_part("What is this?"),
                                       image_part(media.base + "/page.png")]))
    assert "not an image" in reason, reason


@pytest.mark.parametrize("path,size", [("/bomb.png", "30000x30000"),
                                       ("/bomb-pixels.png", "8000x8000")])
def test_png_decompression_bomb(vision, media, path, size):
    assert len(png_bomb(30000, 30000)) < 200
    reason = image_error(chat(vision, [text_part("What is this?"), image_part(media.base + path)]))
    # Refused from the header, before any pixel is inflated, naming the size it claims.
    assert reason.startswith(f"the image is {size} pixels"), reason
    assert "16384 pixels a side" in reason and "40000000 pixels in all" in reason, reason


def test_http_error_status_is_named(vision, media):
    path = "/nothing-here.png?X-Amz-Signature=hunter2"
    before = media.hits.get(path, 0)
    r = chat(vision, [text_part("What is this?"), image_part(media.base + path)])
    reason = image_error(r)
    assert reason == "the server answered 404 Not Found", reason
    assert media.hits[path] == before + 1
    # Pre-signed URLs carry secrets in the query: never echoed.
    assert "hunter2" not in r.text and "nothing-here" not in r.text
    log = read_log(vision)
    assert "media fetch failed" in log and "/nothing-here.png" in log, "no fetcher debug line"
    assert "hunter2" not in log


def test_credentials_in_the_url_are_refused_and_never_shown(vision, media):
    before = media.connections
    url = f"http://user:secret@127.0.0.1:{media.port}/x.png"
    r = chat(vision, [text_part("What is this?"), image_part(url)])
    reason = image_error(r)
    assert "credentials" in reason, reason
    assert "secret" not in r.text
    assert media.connections == before and "/x.png" not in media.hits
    log = read_log(vision)
    assert "media fetch failed" in log, "no fetcher debug line"
    assert "secret" not in log


# --- Data URLs and where image parts may go ------------------------------------------------------


@pytest.mark.parametrize("url,reason", [
    ("data:image/png;base64," + base64.b64encode(b"\0" * (150 << 10)).decode(),
     "the image is larger than the 100 KiB limit"),
    ("data:image/png;base64,", "the image is empty"),
    ("data:image/png;base64,-_-_", "the data URL's base64 payload is invalid"),
    ("data:image/png;base64," + base64.b64encode(b"hello, world").decode(),
     "the data is not an image in a format this server reads"),
])
def test_bad_data_urls(vision, url, reason):
    got = image_error(chat(vision, [text_part("What is this?"), image_part(url)]))
    assert got.startswith(reason), got


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "JPEG"])
def test_other_image_formats(vision, golden, fmt):
    url = f"data:image/{fmt.lower()};base64," + base64.b64encode(
        encoded("small_20x14.png", fmt)).decode()
    r = chat(vision, [image_part(url), text_part("What is in this picture?")])
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == golden["cases"][0]["n_tokens"]


def test_unread_image_format_is_named(vision, media):
    reason = image_error(chat(vision, [text_part("What is this?"),
                                       image_part(media.base + "/bitmap.png")]))
    assert reason.startswith("the image is image/bmp, a format this server does not read"), reason


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x.png", "data:text/html;base64,PGh0bWw+",
                                 "gopher://127.0.0.1:70/"])
def test_unsupported_url_kinds_are_refused(vision, media, url):
    before = media.connections
    err = error_of(chat(vision, [text_part("What is this?"), image_part(url)]))
    assert err["param"].startswith(IMG), err
    assert "https://" in err["message"] and "data:image/" in err["message"], err
    assert media.connections == before


@pytest.mark.parametrize("role", ["system", "assistant"])
def test_images_only_in_user_messages(vision, role):
    messages = [{"role": "user", "content": "Hi"},
                {"role": role, "content": [image_part(data_url("small_20x14.png"))]},
                {"role": "user", "content": "And now?"}]
    r = requests.post(vision.base + "/v1/chat/completions", headers=auth(),
                      json={"model": MODEL, "messages": messages, "max_tokens": 2}, timeout=60)
    err = error_of(r)
    assert err["param"] == "messages[1].content[0].type", err
    assert "only allowed in user messages" in err["message"], err


def test_a_bad_image_in_a_stream_is_a_plain_400(vision, media):
    r = chat(vision, [text_part("What is this?"), image_part(media.base + "/nothing-here.png")],
             stream=True)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    assert image_error(r) == "the server answered 404 Not Found"


def test_image_tokens_count_against_the_context(vision, golden):
    case = golden["cases"][0]
    content = [image_part(data_url("small_20x14.png")), text_part("What is in this picture?")]
    err = error_of(chat(vision, content, max_tokens=2048 - case["n_tokens"] + 1))
    assert err["code"] == "context_length_exceeded", err
    assert f"the request has {case['n_tokens']} prompt tokens" in err["message"], err


def test_thirteen_images_over_two_messages_are_refused(vision):
    seven = [image_part(data_url("small_20x14.png"))] * 7
    messages = [{"role": "user", "content": seven}, {"role": "assistant", "content": "Seven."},
                {"role": "user", "content": seven[:6]}]
    r = requests.post(vision.base + "/v1/chat/completions", headers=auth(),
                      json={"model": MODEL, "messages": messages, "max_tokens": 2}, timeout=60)
    err = error_of(r)
    assert err["message"] == "at most 12 images are allowed per request, got 13", err


# --- file:// --------------------------------------------------------------------------------------


def test_file_url_inside_the_allowed_folder(vision, golden):
    url = "file://" + os.path.join(TINY, "small_20x14.png")
    r = chat(vision, [image_part(url), text_part("What is in this picture?")],
             max_tokens=8)
    assert r.status_code == 200, r.text
    case = golden["cases"][0]
    assert r.json()["usage"]["prompt_tokens"] == case["n_tokens"]
    assert r.json()["choices"][0]["message"]["content"] == case["greedy_text"]


@pytest.mark.parametrize("path,reason", [
    ("/etc/passwd", "the file is outside the allowed media folder"),
    (TINY + "/../../etc/passwd", "the file is outside the allowed media folder"),
    (TINY + "/missing.png",
     "there is no readable file at that path inside the allowed media folder"),
])
def test_file_url_outside_or_missing(vision, path, reason):
    got = image_error(chat(vision, [text_part("What is this?"), image_part("file://" + path)]))
    assert got == reason


def test_file_urls_are_off_without_the_flag(strict):
    url = "file://" + os.path.join(TINY, "small_20x14.png")
    reason = image_error(chat(strict, [text_part("What is this?"), image_part(url)]))
    assert "file:// URLs are not accepted" in reason and "--allowed-local-media-path" in reason


# --- Determinism and the prefix cache ----------------------------------------------------------


def test_same_image_twice_is_the_same_greedy_text(vision):
    content = [image_part(data_url("nonsquare_70x40.png")), text_part("Tell me about it, twice.")]
    a, b = (chat(vision, content, max_tokens=16).json() for _ in range(2))
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
    assert a["usage"] == b["usage"]


def test_concurrent_requests_keep_their_own_images(vision):
    text = "Concurrent probe, the picture:"
    names = ["small_20x14.png", "rgba_50x50.png", "nonsquare_70x40.png", "portrait_26x60.png",
             "large_300x200.png"]

    def ask(name):
        r = chat(vision, [text_part(text), image_part(data_url(name))], max_tokens=24)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]

    alone = {name: ask(name) for name in names}
    results = {}
    threads = [threading.Thread(target=lambda i=i, n=n: results.__setitem__(i, (n, ask(n))))
               for i, n in enumerate(names * 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == len(threads)
    for name, text_out in results.values():
        assert text_out == alone[name], name


def test_prefix_cache_never_reuses_another_images_tokens(vision, expansion):
    text = "Kiln prefix cache probe: compare these two pictures."
    # The first image token's position: the text blocks before it may be shared, no block after.
    first_image_token = tokenize(
        "<|im_start|>User: " + text + "<fake_token_around_image><row_1_col_1>")
    text_blocks = first_image_token // BLOCK * BLOCK
    assert text_blocks >= 2 * BLOCK

    def ask(name):
        hits, queries = (metric(vision, "kiln_prefix_cache_hits_total"),
                         metric(vision, "kiln_prefix_cache_queries_total"))
        body = chat(vision, [text_part(text), image_part(data_url(name))], max_tokens=8).json()
        usage = body["usage"]
        hit = metric(vision, "kiln_prefix_cache_hits_total") - hits
        assert metric(vision, "kiln_prefix_cache_queries_total") - queries == usage["prompt_tokens"]
        details = usage.get("prompt_tokens_details")
        if details and details.get("cached_tokens") is not None:
            assert details["cached_tokens"] == hit, usage
        return body["choices"][0]["message"]["content"], usage["prompt_tokens"], hit

    # small_20x14 and rgba_50x50 both split 3x3: identical token ids, different pixels.
    messages = [{"role": "user", "content": [text_part(text), image_part("x")]}]
    n = expected_tokens(expansion, messages, ["small_20x14.png"])
    assert n == expected_tokens(expansion, messages, ["rgba_50x50.png"])
    first, n1, hit1 = ask("small_20x14.png")
    other, n2, hit2 = ask("rgba_50x50.png")
    again, n3, hit3 = ask("small_20x14.png")
    assert n1 == n2 == n3 == n
    assert hit1 == 0, "a new text and image hit the cache"
    # Another image behind the same text: the text blocks are reused, none holding image tokens.
    assert hit2 == text_blocks < first_image_token, (hit2, first_image_token)
    # The same image again: everything but the block still being filled comes from the cache,
    # and the answer is the uncached one.
    assert hit3 >= (n - 1) // BLOCK * BLOCK > text_blocks, (hit3, n)
    assert again == first


# --- A text-only model ----------------------------------------------------------------------------


def default_model_path():
    home = os.environ.get("KILN_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "kiln")
    return os.path.join(home, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def test_text_only_default_model_refuses_images(media):
    path = default_model_path()
    if not os.path.exists(path):
        pytest.skip(f"the default model is not at {path}: run `cargo xtask fetch-model`")
    s = Server()
    try:
        before = media.connections
        body = {"messages": [{"role": "user", "content": [
            text_part("What is in this image?"), image_part(media.base + "/small.png"),
            image_part(data_url("small_20x14.png")),
        ]}]}
        r = requests.post(s.base + "/v1/chat/completions", headers=auth(), json=body, timeout=60)
        err = error_of(r)
        assert err["code"] == "image_input_not_supported", err
        assert "does not accept image input" in err["message"], err
        assert media.connections == before, "a text-only model fetched an image"
        with pytest.raises(openai.BadRequestError) as e:
            client(s).chat.completions.create(model="", messages=body["messages"])
        assert e.value.status_code == 400 and e.value.body["code"] == "image_input_not_supported"
        # Its OpenAPI document offers no image parts.
        schemas = requests.get(s.base + "/openapi.json", timeout=10).json()["components"]["schemas"]
        assert "ImageUrl" not in schemas
        assert "accepts no images" in schemas["ChatMessage"]["description"]
        # Text is still served.
        r = client(s).chat.completions.create(
            model="", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        assert r.choices[0].message.content
    finally:
        assert s.stop() == 0


# --- Models and the OpenAPI document ------------------------------------------------------------


def test_models_lists_the_vision_model(vision):
    c = client(vision)
    assert [m.id for m in c.models.list().data] == [MODEL]
    assert c.models.retrieve(MODEL).id == MODEL


def test_openapi_documents_image_parts(vision):
    spec = requests.get(vision.base + "/openapi.json", timeout=10).json()
    assert spec["openapi"].startswith("3.1") and "/v1/chat/completions" in spec["paths"]
    schemas = spec["components"]["schemas"]
    assert "ImageUrl" in schemas and "url" in schemas["ImageUrl"]["properties"]
    message = schemas["ChatMessage"]
    assert "at most 12 in the whole request" in message["description"]
    user = next(b for b in message["oneOf"] if b["properties"]["role"]["enum"] == ["user"])
    assert "#/components/schemas/ImageUrl" in json.dumps(user)
    others = [b for b in message["oneOf"] if b is not user]
    assert others and all("ImageUrl" not in json.dumps(b) for b in others)


# --- Pixtral, from its Hugging Face folder and from GGUF + mmproj ---------------------------------

PIXTRAL = os.path.join(ROOT, "testdata", "tiny-pixtral")


@pytest.fixture(scope="module")
def pixtral():
    common = ("--kv-cache-dtype", "f32", "--served-model-name", MODEL)
    servers = [
        Server("--model", PIXTRAL, *common),
        Server("--model", os.path.join(PIXTRAL, "model.gguf"), "--mmproj",
               os.path.join(PIXTRAL, "mmproj.gguf"), *common),
    ]
    yield servers
    for s in servers:
        assert s.stop() == 0, "kiln did not shut down cleanly on SIGTERM"


def pixtral_messages(case):
    """A golden case's messages as an OpenAI client sends them: images as PNG data URLs."""
    out = []
    for m in case["messages"]:
        content = m["content"]
        if not isinstance(content, str):
            parts = []
            for p in content:
                if p["type"] == "image":
                    with open(os.path.join(PIXTRAL, p["image"]), "rb") as f:
                        url = "data:image/png;base64," + base64.b64encode(f.read()).decode()
                    parts.append(image_part(url))
                else:
                    parts.append(text_part(p["text"]))
            content = parts
        out.append({"role": m["role"], "content": content})
    return out


def byte_level_decode(ids):
    """The byte-level BPE decode of `ids` with tiny-pixtral's vocabulary, special tokens left out
    (as the server's `skip_special_tokens`); None when the bytes are not whole UTF-8."""
    with open(os.path.join(PIXTRAL, "tokenizer.json")) as f:
        tok = json.load(f)
    id_to_token = {v: k for k, v in tok["model"]["vocab"].items()}
    specials = {t["id"] for t in tok["added_tokens"] if t.get("special")}
    # GPT-2's byte <-> unicode table.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_of = {chr(c): b for b, c in zip(bs, cs)}
    data = bytes(byte_of[ch] for i in ids if i not in specials for ch in id_to_token[i])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_pixtral_from_both_formats_gives_transformers_prompt_and_greedy_text(pixtral):
    with open(os.path.join(PIXTRAL, "golden.json")) as f:
        golden = json.load(f)
    for name, case in golden["cases"].items():
        texts = []
        for server in pixtral:
            r = client(server).chat.completions.create(
                model=MODEL, messages=pixtral_messages(case), max_tokens=8, temperature=0)
            assert r.usage.prompt_tokens == case["n_tokens"], (name, server.base, r.usage)
            assert r.usage.completion_tokens == 8, (name, r.usage)
            texts.append(r.choices[0].message.content)
        assert texts[0] == texts[1], (name, texts)
        want = byte_level_decode(case["greedy_ids"])
        if want is not None:
            assert texts[0] == want, (name, texts[0], want)


def test_pixtral_lists_itself_as_taking_images(pixtral):
    for server in pixtral:
        models = requests.get(server.base + "/v1/models", headers=auth(), timeout=10).json()
        assert models["data"][0]["input_modalities"] == ["text", "image"], models
