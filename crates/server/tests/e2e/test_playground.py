"""End-to-end: the web playground in a real browser (Debian's Chromium, driven by Playwright)
against the real `kiln serve` with two models from a config file's `[[models]]` — the default
model (SmolLM2) and the tiny random SmolVLM. What is checked is what a user sees and what the
page sends: the page loads with no console error (so nothing broke the CSP), answers stream in,
the model picker and the parameters shape the request, images reach the vision model, Stop
cancels on the server, model output renders as inert markdown, View code's Python, curl and
Node snippets run against the server as shown, the keyboard and phone width work, and the API key is asked
for and kept in sessionStorage."""

import base64
import json
import os
import re
import subprocess
import sys
import time

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from conftest import API_KEY, ROOT, Server

TINY = os.path.join(ROOT, "testdata", "tiny-smolvlm")
PNG = os.path.join(TINY, "small_20x14.png")
SMOL = "SmolLM2-135M-Instruct"
VLM = "tiny-vlm"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def kiln(tmp_path_factory):
    config = tmp_path_factory.mktemp("playground") / "kiln.toml"
    config.write_text(
        'kv_cache_dtype = "f32"\n\n'
        f'[[models]]\npath = "{os.environ["KILN_DEFAULT_MODEL"]}"\nserved_model_name = "{SMOL}"\n\n'
        f'[[models]]\npath = "{TINY}"\nserved_model_name = "{VLM}"\n')
    s = Server("--config", str(config))
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def browser():
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Page:
    """A fresh browser context on the playground, recording console errors and the chat
    requests the page sends."""

    def __init__(self, browser, kiln, key=API_KEY, **context):
        self.context = browser.new_context(**context)
        if key:
            # As if the key had been entered in this tab before (sessionStorage).
            self.context.add_init_script(f"sessionStorage.setItem('kiln.apiKey', {json.dumps(key)})")
        self.page = self.context.new_page()
        self.errors = []
        self.requests = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", self._request)
        self.kiln = kiln
        self.page.goto(kiln.base + "/")

    def _request(self, r):
        if r.url.endswith("/v1/chat/completions"):
            self.requests.append(json.loads(r.post_data))

    def models_loaded(self):
        expect(self.page.locator(f"#model option[value='{VLM}']")).to_have_count(1)

    def fill(self, **fields):
        """Types each value into the field of that id (the system prompt, a parameter…)."""
        for field, value in fields.items():
            self.page.fill("#" + field, value)

    def send(self, text):
        self.page.fill("#prompt", text)
        self.page.click("#send")

    def last_answer(self):
        return self.page.locator(".message.assistant").last

    def wait_done(self, timeout=120_000):
        expect(self.page.locator(".message.assistant.streaming")).to_have_count(0, timeout=timeout)
        expect(self.page.locator("#send")).to_be_visible()

    def close(self):
        self.context.close()


@pytest.fixture
def page(browser, kiln):
    p = Page(browser, kiln)
    yield p
    p.close()
    assert p.errors == [], p.errors


def metric(kiln, name, model):
    text = requests.get(kiln.base + "/metrics", timeout=10).text
    series = f'{name}{{model="{model}"}} '
    return float(next(l for l in text.splitlines() if l.startswith(series)).split()[-1])


def test_the_page_loads_lists_both_models_and_marks_the_vision_one(page):
    page.models_loaded()
    options = page.page.locator("#model option")
    assert options.all_text_contents() == [SMOL, f"{VLM} · vision"]
    assert page.page.input_value("#model") == SMOL
    # The text model takes no images: the attach button is off until the vision model is picked.
    expect(page.page.locator("#attach")).to_be_disabled()
    page.page.select_option("#model", VLM)
    expect(page.page.locator("#attach")).to_be_enabled()
    expect(page.page.locator("#image-count")).to_have_text("0 / 12 images")
    assert page.page.title() == "Kiln playground"
    # `kiln serve` says where the page is.
    page.kiln.log.flush()
    with open(page.kiln.log.name) as f:
        assert f"Playground: {page.kiln.base}/\n" in f.read()


def test_an_answer_streams_in_with_its_figures(page):
    page.models_loaded()
    # Every length the answer's text takes while it is still streaming.
    page.page.evaluate("""() => {
        window.__lengths = [];
        new MutationObserver(() => {
            const a = document.querySelector('.message.assistant.streaming .content');
            if (a) window.__lengths.push(a.textContent.length);
        }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
    }""")
    page.page.fill("#max_tokens", "48")
    page.send("Write three sentences about the sea.")
    page.wait_done()
    lengths = [n for n in page.page.evaluate("window.__lengths") if n > 0]
    # (Not monotone: `**` shows until its closing pair arrives and makes it bold.)
    assert len(set(lengths)) >= 3 and lengths[-1] > lengths[0], lengths
    answer = page.last_answer()
    assert len(answer.locator(".content").inner_text().strip()) > 0
    stats = answer.locator(".stats").inner_text()
    assert re.search(r"TTFT \d+ ms", stats) and re.search(r"[\d.]+ tokens/s", stats), stats
    assert re.search(r"prompt \d+ · completion \d+ tokens", stats), stats
    body = page.requests[-1]
    assert body["model"] == SMOL and body["max_tokens"] == 48 and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": "Write three sentences about the sea."}]


def test_the_model_picker_and_the_parameters_shape_the_request(page):
    page.models_loaded()
    page.page.select_option("#model", VLM)
    page.fill(system="Answer briefly.", temperature="0.5", max_tokens="4", seed="7",
              stop_seqs="\\n\\n\nEND", presence_penalty="0.3")
    page.send("Hello")
    page.wait_done()
    body = page.requests[-1]
    assert body["model"] == VLM
    assert body["temperature"] == 0.5 and body["max_tokens"] == 4 and body["seed"] == 7
    assert body["stop"] == ["\n\n", "END"] and body["presence_penalty"] == 0.3
    assert "top_p" not in body and "frequency_penalty" not in body  # left at their defaults
    assert body["messages"][0] == {"role": "system", "content": "Answer briefly."}
    # The slider follows the number, and the answer names the model that gave it.
    assert page.page.input_value("#temperature-range") == "0.5"
    assert VLM in page.last_answer().locator(".role").inner_text()
    # Switching back routes the next request to the other model.
    page.page.select_option("#model", SMOL)
    page.page.fill("#temperature", "0")
    page.send("And again")
    page.wait_done()
    body = page.requests[-1]
    assert body["model"] == SMOL and body["temperature"] == 0
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    # A value out of range is refused on the page, with the field marked.
    page.page.fill("#top_p", "3")
    expect(page.page.locator("#top_p-error")).to_have_text("Between 0 and 1.")
    n = len(page.requests)
    page.send("not sent")
    time.sleep(0.5)
    assert len(page.requests) == n


def test_images_reach_the_vision_model(page):
    page.models_loaded()
    page.page.select_option("#model", VLM)
    page.page.fill("#max_tokens", "6")
    page.page.set_input_files("#file", [PNG, PNG])
    expect(page.page.locator("#attachments .thumb")).to_have_count(2)
    expect(page.page.locator("#image-count")).to_have_text("2 / 12 images")
    page.page.click("#attachments .thumb button >> nth=1")  # removable
    expect(page.page.locator("#attachments .thumb")).to_have_count(1)
    # Dropped and pasted images are attached too.
    with open(PNG, "rb") as f:
        png = base64.b64encode(f.read()).decode()
    page.page.evaluate("""(png) => {
        const file = () => new File([Uint8Array.from(atob(png), c => c.charCodeAt(0))], 'x.png', {type: 'image/png'});
        const drop = new DataTransfer(); drop.items.add(file());
        document.dispatchEvent(new DragEvent('drop', {dataTransfer: drop, bubbles: true, cancelable: true}));
        const paste = new DataTransfer(); paste.items.add(file());
        document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: paste, bubbles: true, cancelable: true}));
    }""", png)
    expect(page.page.locator("#attachments .thumb")).to_have_count(3)
    with page.page.expect_response(lambda r: r.url.endswith("/v1/chat/completions")) as response:
        page.send("What is in these pictures?")
    assert response.value.status == 200
    page.wait_done()
    content = page.requests[-1]["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "What is in these pictures?"}
    urls = [p["image_url"]["url"] for p in content[1:]]
    assert urls == ["data:image/png;base64," + png] * 3
    assert page.page.locator(".message.user").last.locator("img").count() == 3
    assert page.page.locator(".message.error").count() == 0
    assert page.last_answer().locator(".content").inner_text().strip()
    # The text model cannot take this conversation: Send says why instead of failing.
    page.page.select_option("#model", SMOL)
    page.page.fill("#prompt", "and now?")
    expect(page.page.locator("#send")).to_be_disabled()
    expect(page.page.locator("#composer-note")).to_contain_text("does not take images")


def test_stop_cancels_the_request_on_the_server(page):
    page.models_loaded()
    page.page.fill("#max_tokens", "3000")
    # Greedy, so the answer is the same long count every run (a sampled one could end before
    # Stop is pressed).
    page.page.fill("#temperature", "0")
    page.send("Count from 1 to 1000, one number per line.")
    expect(page.last_answer().locator(".content")).not_to_have_text("", timeout=60_000)
    assert metric(page.kiln, "kiln_num_requests_running", SMOL) == 1
    page.page.click("#stop")
    page.wait_done(timeout=10_000)
    deadline = time.time() + 10
    while metric(page.kiln, "kiln_num_requests_running", SMOL) != 0:
        assert time.time() < deadline, "the server kept generating after Stop"
        time.sleep(0.1)
    expect(page.last_answer().locator(".stats")).to_contain_text("stopped")
    # Regenerate replaces the stopped answer with a new one for the same question.
    page.page.fill("#max_tokens", "5")
    page.page.click("#regenerate")
    page.wait_done()
    assert page.page.locator(".message.assistant").count() == 1
    assert page.requests[-1]["messages"] == page.requests[-2]["messages"]
    page.page.click("#clear")
    expect(page.page.locator(".message")).to_have_count(0)


def test_a_failed_request_shows_the_servers_message(page):
    page.models_loaded()
    page.page.select_option("#model", VLM)  # a 2,048-token context
    page.send("word " * 3000)
    error = page.page.locator(".message.error")
    expect(error).to_contain_text("Error 400")
    expect(error).to_contain_text("context")
    assert page.page.locator(".message.assistant").count() == 0
    # The browser logs the refused request itself; the page adds nothing to it.
    assert page.errors == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"]
    page.errors.clear()


PAYLOADS = """# Title <img src=x onerror="window.__pwned=1">
<script>window.__pwned=2</script>
<img src=x onerror=window.__pwned=3>
**bold <b onmouseover=alert(1)>x</b>** and `<script>alert(4)</script>`
[click](javascript:window.__pwned=5) [data](data:text/html,<script>alert(6)</script>) [ok <b>](https://example.com/a?b="c"&d=e)
![tracker](https://example.com/pixel.png) <https://example.com/auto>
<iframe src="javascript:window.__pwned=7"></iframe><svg onload=window.__pwned=8>

```html
<img src=x onerror=window.__pwned=9>
```

| a | <img src=x onerror=window.__pwned=10> |
|---|---|
| [x](vbscript:msgbox) | *y* |

- item <a href="javascript:window.__pwned=11">z</a>
"""


def test_markdown_from_the_model_is_rendered_inert(page):
    page.models_loaded()
    out = page.page.evaluate("""async (text) => {
        const { renderMarkdown } = await import('/playground/markdown.js');
        const box = document.createElement('div');
        box.className = 'message assistant';
        box.appendChild(renderMarkdown(text));
        document.getElementById('messages').appendChild(box);
        await new Promise(r => setTimeout(r, 300));
        const all = [...box.querySelectorAll('*')];
        return {
            pwned: window.__pwned ?? null,
            tags: [...new Set(all.map(e => e.tagName.toLowerCase()))].sort(),
            handlers: all.flatMap(e => [...e.attributes].map(a => a.name)).filter(n => n.startsWith('on')),
            links: [...box.querySelectorAll('a')].map(a => [a.getAttribute('href'), a.rel, a.target]),
            text: box.textContent,
        };
    }""", PAYLOADS)
    assert out["pwned"] is None
    assert out["handlers"] == []
    assert not {"script", "img", "iframe", "svg", "b"} & set(out["tags"]), out["tags"]
    assert {"h1", "strong", "code", "pre", "table", "ul", "a", "em"} <= set(out["tags"]), out["tags"]
    # Only http(s) links become anchors, each opening apart from this page.
    hrefs = [h for h, _, _ in out["links"]]
    assert hrefs == ["https://example.com/a?b=%22c%22&d=e", "https://example.com/pixel.png",
                     "https://example.com/auto"], out["links"]
    assert all(rel == "noopener noreferrer nofollow" and t == "_blank" for _, rel, t in out["links"])
    # The payloads are shown as text, not dropped.
    for shown in ['<script>window.__pwned=2</script>', '<img src=x onerror=window.__pwned=3>',
                  'javascript:window.__pwned=5', '<svg onload=window.__pwned=8>']:
        assert shown in out["text"], shown


def run_snippet(page, lang):
    page.page.click("#view-code")
    page.page.click(f"#code-dialog [data-lang='{lang}']")
    shown = page.page.locator("#code").inner_text()
    copied = page.page.input_value("#code-full")
    page.page.click("#close-code")
    return shown, copied


def test_view_code_snippets_run_against_the_server(page, tmp_path):
    page.models_loaded()
    page.fill(system="You are terse.", temperature="0", max_tokens="8", stop_seqs="it's \"quoted\"")
    page.send("Say 'hi' & wave $HOME `now` \\ é 🙂")
    page.wait_done()
    page.page.fill("#prompt", "One more?")  # the message being written is part of the request

    shown, copied = run_snippet(page, "python")
    assert shown == copied  # nothing to shorten: what is shown runs as it is
    assert f'base_url="{page.kiln.base}/v1"' in shown and f'api_key="{API_KEY}"' in shown
    script = tmp_path / "snippet.py"
    script.write_text(shown, encoding="utf-8")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr

    shown, copied = run_snippet(page, "curl")
    assert shown == copied
    r = subprocess.run(["bash", "-c", shown], capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert r.returncode == 0 and "data: [DONE]" in r.stdout, r.stdout + r.stderr
    chunks = [json.loads(l[6:]) for l in r.stdout.splitlines() if l.startswith("data: {")]
    assert chunks and all(c["model"] == SMOL for c in chunks)
    curl_body = json.loads(shown.split("<<'EOF'\n", 1)[1].rsplit("\nEOF", 1)[0])

    shown, copied = run_snippet(page, "node")
    assert shown == copied
    modules = os.environ["KILN_E2E_NODE_MODULES"]
    assert os.path.isdir(modules), f"{modules} is missing: run `cargo xtask e2e-env`"
    os.symlink(modules, tmp_path / "node_modules")
    script = tmp_path / "snippet.mjs"
    script.write_text(shown, encoding="utf-8")
    r = subprocess.run(["node", str(script)], capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert r.returncode == 0 and r.stdout.strip(), r.stdout + r.stderr

    # What the snippets send is exactly what the page sends.
    page.page.click("#send")
    page.wait_done()
    assert page.requests[-1] == curl_body
    assert curl_body["messages"][1]["content"] == "Say 'hi' & wave $HOME `now` \\ é 🙂"
    assert curl_body["stop"] == ["it's \"quoted\""] and curl_body["temperature"] == 0


def test_view_code_shortens_images_on_screen_but_copies_them_whole(page, tmp_path):
    page.models_loaded()
    page.page.select_option("#model", VLM)
    page.page.fill("#max_tokens", "3")
    page.page.set_input_files("#file", os.path.join(TINY, "large_300x200.png"))
    page.page.fill("#prompt", "Describe it")
    shown, copied = run_snippet(page, "python")
    with open(os.path.join(TINY, "large_300x200.png"), "rb") as f:
        full = "data:image/png;base64," + base64.b64encode(f.read()).decode()
    assert full in copied and full not in shown and re.search(r"…\[\d+ KB\]", shown)
    script = tmp_path / "snippet.py"
    script.write_text(copied, encoding="utf-8")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert r.returncode == 0, r.stderr


def test_enter_sends_and_shift_enter_breaks_the_line(page):
    page.models_loaded()
    page.page.fill("#max_tokens", "2")
    prompt = page.page.locator("#prompt")
    prompt.click()
    prompt.press_sequentially("first line")
    prompt.press("Shift+Enter")
    prompt.press_sequentially("second line")
    assert prompt.input_value() == "first line\nsecond line" and page.requests == []
    prompt.press("Enter")
    page.wait_done()
    assert page.requests[-1]["messages"][-1]["content"] == "first line\nsecond line"
    assert prompt.input_value() == ""


def test_usable_at_phone_width_and_in_dark(browser, kiln):
    p = Page(browser, kiln, viewport={"width": 375, "height": 740}, color_scheme="dark",
             is_mobile=True, has_touch=True)
    try:
        p.models_loaded()
        page = p.page
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        # The settings are a panel opened on demand, over the chat.
        expect(page.locator("#params")).to_be_hidden()
        for visible in ["#model", "#prompt", "#send", "#view-code"]:
            expect(page.locator(visible)).to_be_in_viewport()
        page.click("#params-toggle")
        expect(page.locator("#temperature")).to_be_in_viewport()
        page.fill("#max_tokens", "3")
        page.click("#params-close")
        expect(page.locator("#params")).to_be_hidden()
        # Dark follows the system, and the theme button overrides it.
        dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
        page.click("#theme")  # system → light
        light = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert dark == "rgb(17, 17, 19)" and light == "rgb(246, 246, 247)", (dark, light)
        p.send("Hi")
        p.wait_done()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        assert p.errors == [], p.errors
    finally:
        p.close()


def test_the_key_is_asked_for_and_kept_for_the_tab(browser, kiln):
    p = Page(browser, kiln, key=None)
    try:
        page = p.page
        expect(page.locator("#key-box")).to_be_visible()
        expect(page.locator("#banner")).to_contain_text("needs an API key")
        page.fill("#api-key", "wrong-key")
        page.click("#save-key")
        expect(page.locator("#banner")).to_contain_text("refused")
        page.fill("#api-key", API_KEY)
        page.press("#api-key", "Enter")
        p.models_loaded()
        expect(page.locator("#banner")).to_be_hidden()
        assert page.evaluate("sessionStorage.getItem('kiln.apiKey')") == API_KEY
        assert page.evaluate("localStorage.getItem('kiln.apiKey')") is None
        page.reload()
        p.models_loaded()
        page.fill("#max_tokens", "2")
        p.send("Hi")
        p.wait_done()
        assert page.locator(".message.error").count() == 0
        # The page asked for the key before calling the API: the one error is the wrong key's
        # refused call, which the browser logs itself.
        assert len(p.errors) == 1 and "401" in p.errors[0], p.errors
    finally:
        p.close()
