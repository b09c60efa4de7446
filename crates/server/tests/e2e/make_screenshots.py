"""Makes docs/playground-light.png and docs/playground-dark.png: the playground on the real
`kiln serve` (the default model and the tiny SmolVLM), one greedy answer, in each theme.

Run from this folder with the e2e venv, as the end-to-end tests are run:
  KILN_BIN=… KILN_DEFAULT_MODEL=… python make_screenshots.py
"""

import os

from playwright.sync_api import expect, sync_playwright

from conftest import ROOT, Server

TINY = os.path.join(ROOT, "testdata", "tiny-smolvlm")
QUESTION = "Give me three tips for writing clear code, as a short list."


def main():
    server = Server("--model", f"SmolLM2-135M-Instruct={os.environ['KILN_DEFAULT_MODEL']}",
                    "--model", f"tiny-vlm={TINY}", api_key=None)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            for scheme in ["light", "dark"]:
                page = browser.new_page(viewport={"width": 1280, "height": 760},
                                        color_scheme=scheme, device_scale_factor=1)
                page.goto(server.base + "/")
                expect(page.locator("#model option")).to_have_count(2)
                page.fill("#system", "You are a concise assistant.")
                page.fill("#temperature", "0")
                page.fill("#max_tokens", "160")
                page.fill("#prompt", QUESTION)
                page.click("#send")
                expect(page.locator(".message.assistant .stats")).to_have_count(1, timeout=120_000)
                page.mouse.move(0, 0)
                page.screenshot(path=os.path.join(ROOT, "docs", f"playground-{scheme}.png"))
                page.close()
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
