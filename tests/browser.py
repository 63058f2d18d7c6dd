"""Drives the operator page in Debian's Chromium (headless) with Playwright, as an operator
would: the page loads, the live image changes, a failed part shows in the gallery, and
capture -> calibrate -> set threshold runs end to end from the page's own buttons. Writes a
1280x800 screenshot and prints what it saw as one JSON line.

Usage: python tests/browser.py URL TOKEN SCREENSHOT.png
"""

import json
import sys
import time

from playwright.sync_api import sync_playwright

# As root in a closed network: no sandbox, and none of Chromium's own connections.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def wait_for_message(page, prefix, seconds):
    """Waits until the commissioning message starts with `prefix`; fails on `failed`."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        text = page.inner_text("#message")
        if text.startswith(prefix):
            return text
        if text.startswith("failed"):
            raise SystemExit(f"the job failed: {text}")
        time.sleep(0.2)
    raise SystemExit(f"no '{prefix}' within {seconds} s: {page.inner_text('#message')!r}")


def main():
    url, token, screenshot = sys.argv[1:4]
    seen = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        page.wait_for_function("document.getElementById('frames').textContent !== '0'", timeout=30_000)
        page.wait_for_function("document.getElementById('live').naturalWidth > 0", timeout=30_000)
        # The live image changes as parts are judged.
        first = page.locator("#live").screenshot()
        changed = False
        until = time.monotonic() + 20
        while not changed and time.monotonic() < until:
            time.sleep(0.3)
            changed = page.locator("#live").screenshot() != first
        seen["live_changed"] = changed
        page.wait_for_selector("#gallery .thumb[data-part]", timeout=30_000)
        seen["gallery_parts"] = page.locator("#gallery .thumb[data-part]").count()
        seen["verdict"] = page.inner_text("#verdict")
        # Commissioning from the page's own buttons.
        page.fill("#token", token)
        page.dispatch_event("#token", "change")
        page.fill("#count", "3")
        page.click("#capture")
        wait_for_message(page, "captured", 60)
        page.wait_for_function("!document.getElementById('calibrate').disabled", timeout=10_000)
        page.click("#calibrate")
        seen["calibrated"] = wait_for_message(page, "calibrated", 120)
        page.wait_for_function("document.getElementById('loo').textContent.includes('leave-one-out')", timeout=10_000)
        job = page.evaluate("fetch('/api/v1/commissioning').then((r) => r.json())")["job"]
        seen["calibrated_threshold"] = job["calibration"]["threshold"]
        page.wait_for_function("!document.getElementById('apply').disabled", timeout=10_000)
        # The sample loop holds defects: captured parts judged FAIL must be confirmed as good.
        seen["failed_captures"] = len(job["calibration"]["failed_captures"])
        if seen["failed_captures"]:
            page.check("#accept")
        page.click("#apply")
        seen["applied"] = wait_for_message(page, "applied", 60)
        time.sleep(1.5)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=screenshot)
        seen["page_errors"] = errors
        browser.close()
    if seen["page_errors"]:
        raise SystemExit(f"the page's scripts failed: {seen['page_errors']}")
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
