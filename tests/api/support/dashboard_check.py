"""The dashboard as a person uses it: real Chromium (headless, a fresh
profile) driven by selenium against a running vectorize service.

Usage: dashboard_check.py PLAN_JSON

PLAN_JSON names the service (url), a second one with an API key (keyed_url,
key), the fake hub's repos to upload (watched_repo: a few seconds long;
slow_repo: long enough to cancel), a ZIP archive holding one valid model
(stored_model) and one refused (rejected_model), and the folder for
screenshots. Every wait polls with a deadline (WebDriverWait); nothing
sleeps a fixed time. Each check prints "ok   ..." and the first failure
ends the run with the page's state.
"""

import json
import os
import re
import shutil
import sys
import tempfile

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
DESKTOP = (1440, 900)
NARROW = (375, 812)


def ok(message):
    print(f"ok   {message}", flush=True)


class Page:
    """One browser tab on the dashboard, and the waits the checks use."""

    def __init__(self, screenshots):
        options = webdriver.ChromeOptions()
        options.binary_location = os.environ["CHROMIUM"]
        self.profile = tempfile.mkdtemp(prefix="vectorize-dashboard-")
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(os.environ["CHROMEDRIVER"]))
        self.screenshots = screenshots
        self.viewport(*DESKTOP, mobile=False)

    def close(self):
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def viewport(self, width, height, mobile):
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile,
        })

    def until(self, condition, what, seconds=30):
        """Polls `condition` every 50 ms until it answers something true."""
        def attempt(_):
            try:
                return condition()
            except StaleElementReferenceException:
                return False
        try:
            return WebDriverWait(self.driver, seconds, poll_frequency=0.05).until(attempt)
        except TimeoutException:
            self.fail(f"timed out after {seconds}s waiting for {what}")

    def fail(self, message):
        shot = os.path.join(self.screenshots, "dashboard-failure.png")
        try:
            self.driver.save_screenshot(shot)
            body = self.driver.find_element(By.TAG_NAME, "body").text
        except Exception as error:  # the browser itself may be gone
            body = f"(no page: {error})"
        sys.exit(f"FAIL {message}\n--- the page's text:\n{body}\n--- screenshot: {shot}")

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def by_id(self, element_id):
        return self.driver.find_element(By.ID, element_id)

    def css(self, selector, root=None):
        return (root or self.driver).find_elements(By.CSS_SELECTOR, selector)

    def labelled(self, text):
        """The control a visible <label> with exactly this text is for."""
        labels = [
            label for label in self.driver.find_elements(By.XPATH, f"//label[normalize-space(.)='{text}']")
            if label.is_displayed()
        ]
        if len(labels) != 1:
            self.fail(f"{len(labels)} labels read '{text}'")
        return self.by_id(labels[0].get_attribute("for"))

    def button(self, text, root=None):
        for button in self.css("button", root):
            if button.is_displayed() and button.text.strip() == text:
                return button
        self.fail(f"no visible button '{text}'")

    def live_row(self, tag):
        for row in self.css("#live-list > li"):
            if row.find_element(By.CSS_SELECTOR, ".tag").text == tag:
                return row
        return None

    def history_row(self, tag, status=None):
        for row in self.css("#history-list > li"):
            if row.find_element(By.CSS_SELECTOR, ".tag").text == tag and (
                status is None or row.get_attribute("data-status") == status
            ):
                return row
        return None

    def model_row(self, tag):
        rows = self.css(f'#store-list > li[data-model-tag="{tag}"]')
        return rows[0] if rows else None

    def outcome(self, form_id):
        return self.css(f"#{form_id} .outcome")[0]

    def tab(self, name):
        self.button(name, self.css('[role="tablist"]')[0]).click()

    def shot(self, name):
        path = os.path.join(self.screenshots, name)
        self.driver.save_screenshot(path)
        ok(f"screenshot {path}")


def stat(row, name):
    return row.find_element(By.CSS_SELECTOR, f".stats .{name}").text


def bar_value(row):
    return int(row.find_element(By.CSS_SELECTOR, ".bar").get_attribute("aria-valuenow"))


def open_dashboard(page, url):
    page.driver.get(url + "/")
    page.until(lambda: page.by_id("link-state").get_attribute("data-state") == "live",
               "the event stream to connect")
    if page.driver.title != "vectorize":
        page.fail(f"the title is {page.driver.title!r}")
    if page.js("return document.getElementById('key-dialog').open"):
        page.fail("a service without a key asked for one")
    ok("the dashboard opens and its event stream is live, no key asked for")


def check_refusals_are_text(page):
    hostile = '<img src=x onerror="window.injected=1">'
    page.tab("Hugging Face")
    page.labelled("Repo id").send_keys(hostile)
    page.button("Upload from Hugging Face").click()
    outcome = page.outcome("form-hf")
    page.until(lambda: outcome.get_attribute("data-kind") == "error", "the refusal")
    if hostile not in outcome.text or "is not a Hugging Face repo id" not in outcome.text:
        page.fail(f"the service's message is not shown as it is: {outcome.text!r}")
    if page.js("return arguments[0].children.length", outcome) or page.js("return window.injected"):
        page.fail("the service's message became HTML")
    page.labelled("Repo id").clear()
    ok(f"a refusal shows the service's message as text: {outcome.text[:60]}…")


def check_huggingface_upload(page, plan):
    repo = plan["watched_repo"]
    tag = f"{repo}@main"
    page.labelled("Repo id").send_keys(repo)
    page.labelled("Revision").send_keys("main")
    page.button("Upload from Hugging Face").click()
    outcome = page.outcome("form-hf")
    page.until(lambda: outcome.text.startswith(f"Queued {tag}"), "the task to be queued")
    row = page.until(lambda: page.live_row(tag), "the live row of the upload")
    partial = page.until(
        lambda: (lambda v: v if 0 < v < 100 else None)(bar_value(page.live_row(tag) or row)),
        "the bar to show part of the download", seconds=60)
    done = page.until(lambda: page.history_row(tag, "DONE"), "the task to be DONE", seconds=60)
    if page.live_row(tag):
        page.fail("a DONE task is still under Live uploads")
    duration = done.find_element(By.CSS_SELECTOR, ".duration").text
    size = done.find_element(By.CSS_SELECTOR, ".size").text
    if not re.fullmatch(r"(\d+m )?\d+s", duration) or not size.endswith("MiB"):
        page.fail(f"the finished row reads duration {duration!r}, size {size!r}")
    ok(f"Hugging Face upload from the form: the bar moved ({partial}%), then DONE in {duration}, {size}")


def check_store(page, plan):
    repo = plan["watched_repo"]
    tag = f"{repo}@main"
    row = page.until(lambda: page.model_row(tag), "the model in the store")
    files = int(row.find_element(By.CSS_SELECTOR, ".file-count").text)
    row.find_element(By.CSS_SELECTOR, "summary").click()
    command = page.until(lambda: (lambda c: c if c.is_displayed() else None)(
        row.find_element(By.CSS_SELECTOR, ".pull-command")), "the pull command")
    expected = f"HF_ENDPOINT={plan['url']}/mirror/huggingface hf download {repo} --revision main"
    if command.text != expected:
        page.fail(f"the pull command reads {command.text!r}, not {expected!r}")
    items = page.css(".files > li", row)
    if len(items) != files or not files:
        page.fail(f"the model lists {len(items)} files and counts {files}")
    for item in items:
        sha = item.find_element(By.CSS_SELECTOR, ".file-sha").text
        if not re.fullmatch(r"sha256 [0-9a-f]{64}", sha):
            page.fail(f"a file's sha256 reads {sha!r}")
    names = [i.find_element(By.CSS_SELECTOR, ".file-path").text for i in items]
    if "model.safetensors" not in names:
        page.fail(f"the files are {names}")
    ok(f"the store lists {tag}: {files} files with sizes and sha256; pull command: {expected}")


def check_zip_upload(page, plan):
    # Keyboard: from the selected tab, the arrow keys reach "ZIP archive".
    tab = page.button("Hugging Face", page.css('[role="tablist"]')[0])
    tab.send_keys(Keys.ARROW_RIGHT)
    page.driver.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
    active = page.driver.switch_to.active_element
    if active.text != "ZIP archive" or active.get_attribute("aria-selected") != "true":
        page.fail(f"the arrow keys moved to {active.text!r}")
    if not page.by_id("form-zip").is_displayed():
        page.fail("the ZIP form is not shown")
    ok("the upload tabs follow the arrow keys")

    name = os.path.basename(plan["archive"])
    page.by_id("zip-file").send_keys(plan["archive"])
    page.until(lambda: name in page.by_id("zip-chosen").text, "the picked file to be named")
    # Drop the same bytes on the zone as a file of another name.
    page.js("""
        const input = document.getElementById('zip-file');
        const picked = input.files[0];
        const moved = new DataTransfer();
        moved.items.add(new File([picked], 'dropped-' + picked.name, {type: 'application/zip'}));
        input.value = '';
        const zone = document.getElementById('zip-drop');
        for (const type of ['dragenter', 'dragover', 'drop']) {
          zone.dispatchEvent(new DragEvent(type, {dataTransfer: moved, bubbles: true, cancelable: true}));
        }
    """)
    page.until(lambda: f"dropped-{name}" in page.by_id("zip-chosen").text, "the dropped file to be named")
    ok("a ZIP is chosen with the picker and with drag and drop")
    page.button("Upload archive").click()
    page.until(lambda: page.by_id("zip-report").is_displayed(), "the service's report", seconds=60)
    sent = page.by_id("zip-bar").get_attribute("aria-valuenow")
    stored = page.by_id("zip-stored").text
    rejected = page.by_id("zip-rejected").text
    if sent != "100":
        page.fail(f"the bytes-sent bar ends at {sent}%")
    if not stored.startswith(plan["stored_model"]):
        page.fail(f"stored: {stored!r}")
    if not rejected.startswith(plan["rejected_model"] + " — ") or len(rejected) < 20:
        page.fail(f"rejected: {rejected!r}")
    page.until(lambda: page.model_row(plan["stored_model"]), "the ZIP's model in the store")
    ok(f"ZIP upload: sent 100%; stored: {stored}; rejected: {rejected}")


def check_slow_upload_and_cancel(page, plan):
    repo = plan["slow_repo"]
    tag = f"{repo}@main"
    page.tab("Hugging Face")
    page.labelled("Repo id").send_keys(repo)
    page.button("Upload from Hugging Face").click()
    row = page.until(lambda: (lambda r: r if r and bar_value(r) > 0 else None)(page.live_row(tag)),
                     "the slow upload to move", seconds=60)
    page.until(lambda: stat(row, "rate").endswith("/s") and stat(row, "eta") != "—",
               "a rate and an ETA")
    if stat(row, "attempt") != "1 of 4" or not re.fullmatch(r"\d+ / \d+", stat(row, "files")):
        page.fail(f"attempt {stat(row, 'attempt')!r}, files {stat(row, 'files')!r}")
    # Progress moves nothing on the page: the row keeps its box.
    before, value = row.rect, bar_value(row)
    page.until(lambda: bar_value(row) > value, "the bar to move on")
    if row.rect != before:
        page.fail(f"the row moved or resized as progress came: {before} -> {row.rect}")
    ok(f"a running upload shows bytes {stat(row, 'bytes')!r}, rate {stat(row, 'rate')!r}, "
       f"ETA {stat(row, 'eta')!r}, files {stat(row, 'files')!r}, attempt {stat(row, 'attempt')!r}; "
       "its row keeps its size")

    check_layouts(page)

    # Cancel asks first; "Keep it" keeps it.
    page.button("Cancel", row).click()
    dialog = page.by_id("confirm-dialog")
    page.until(lambda: dialog.is_displayed() and tag in page.by_id("confirm-text").text, "the question")
    if page.driver.switch_to.active_element.text != "Keep it":
        page.fail("the question does not start on 'Keep it'")
    page.button("Keep it", dialog).click()
    page.until(lambda: not dialog.is_displayed(), "the question to close")
    if page.live_row(tag) is None or page.history_row(tag):
        page.fail("'Keep it' cancelled the upload")
    page.button("Cancel", row).click()
    page.until(lambda: dialog.is_displayed(), "the question")
    page.button("Cancel upload", dialog).click()
    cancelled = page.until(lambda: page.history_row(tag, "CANCELLED"), "the task to be CANCELLED")
    code = cancelled.find_element(By.CSS_SELECTOR, ".error-code").text
    message = cancelled.find_element(By.CSS_SELECTOR, ".error-msg").text
    if code != "CANCELLED" or not message:
        page.fail(f"the cancelled task reads {code!r}: {message!r}")
    if page.live_row(tag):
        page.fail("the cancelled task is still live")
    ok(f"cancel asks first, then the task is CANCELLED: {code} {message}")


def check_layouts(page):
    """Screenshots while an upload runs: desktop, dark, and 375 px wide."""
    overflow = page.js("return document.documentElement.scrollWidth - window.innerWidth")
    if overflow > 0:
        page.fail(f"the desktop page is {overflow}px wider than the window")
    page.shot("dashboard-desktop.png")
    page.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    page.until(lambda: page.js(
        "return getComputedStyle(document.body).backgroundColor") != "rgb(245, 246, 248)",
        "the dark colours")
    page.shot("dashboard-dark.png")
    page.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    page.viewport(*NARROW, mobile=True)
    page.until(lambda: page.js("return window.innerWidth") == NARROW[0], "the narrow viewport")
    overflow = page.js("return document.documentElement.scrollWidth - window.innerWidth")
    if overflow > 0:
        page.fail(f"at {NARROW[0]} px the page is {overflow}px wider than the screen")
    page.shot("dashboard-narrow.png")
    page.viewport(*DESKTOP, mobile=False)
    page.until(lambda: page.js("return window.innerWidth") == DESKTOP[0], "the desktop viewport")
    ok(f"no horizontal scrolling at {DESKTOP[0]} and {NARROW[0]} px")


def check_filters(page, plan):
    done_tag = f"{plan['watched_repo']}@main"
    cancelled_tag = f"{plan['slow_repo']}@main"
    status = Select(page.labelled("Status"))
    source = Select(page.labelled("Source"))
    status.select_by_visible_text("Cancelled")
    page.until(lambda: page.history_row(cancelled_tag) and not page.history_row(done_tag),
               "only cancelled tasks")
    status.select_by_visible_text("Done")
    page.until(lambda: page.history_row(done_tag) and not page.history_row(cancelled_tag),
               "only done tasks")
    status.select_by_visible_text("All")
    source.select_by_visible_text("GitHub")
    page.until(lambda: not page.css("#history-list > li") and page.by_id("history-empty").is_displayed(),
               "no GitHub task")
    source.select_by_visible_text("All")
    page.until(lambda: page.history_row(done_tag) and page.history_row(cancelled_tag), "every task again")
    ok("the status and source filters choose the finished tasks")


def check_delete(page, plan):
    tag = plan["stored_model"]
    row = page.model_row(tag)
    page.button("Delete", row).click()
    dialog = page.by_id("confirm-dialog")
    page.until(lambda: dialog.is_displayed() and tag in page.by_id("confirm-text").text, "the question")
    page.button("Delete model", dialog).click()
    page.until(lambda: page.model_row(tag) is None, "the model to leave the list")
    ok(f"delete asks first, then {tag} leaves the store")


def check_labels_and_console(page):
    unnamed = page.js("""
        const named = (el) => (el.labels && el.labels.length) || el.getAttribute('aria-label')
            || el.getAttribute('aria-labelledby') || (el.tagName === 'BUTTON' && el.textContent.trim());
        return [...document.querySelectorAll('input, select, button, [role=progressbar]')]
            .filter((el) => !named(el)).map((el) => el.outerHTML.slice(0, 80));
    """)
    if unnamed:
        page.fail(f"controls without a name: {unnamed}")
    errors = [
        entry["message"] for entry in page.driver.get_log("browser")
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]
    if errors:
        page.fail(f"the console shows errors: {errors}")
    ok("every control has a name; no script error or refused content in the console")


def check_api_key(plan):
    page = Page(plan["screenshots"])
    try:
        page.driver.get(plan["keyed_url"] + "/")
        dialog = page.by_id("key-dialog")
        page.until(lambda: dialog.is_displayed(), "the key to be asked for")
        key_input = page.labelled("API key")
        key_input.send_keys("not-the-key", Keys.ENTER)
        page.until(lambda: dialog.is_displayed() and "refused" in page.by_id("key-reason").text,
                   "a wrong key to be refused")
        page.labelled("API key").send_keys(plan["key"], Keys.ENTER)
        page.until(lambda: page.by_id("link-state").get_attribute("data-state") == "live",
                   "the stream to connect with the key")
        page.until(lambda: page.by_id("store-empty").text == "The store holds no model yet.",
                   "the store to load with the key")
        if dialog.is_displayed():
            page.fail("the key is still asked for")
        kept = page.js("return [sessionStorage.getItem('vectorize.apiKey'), localStorage.length]")
        if kept != [plan["key"], 0]:
            page.fail(f"the key is kept as {kept}")
        if plan["key"] in page.driver.current_url:
            page.fail("the key is in the URL")
        page.driver.refresh()
        page.until(lambda: page.by_id("link-state").get_attribute("data-state") == "live",
                   "the stream to connect after a reload")
        if page.by_id("key-dialog").is_displayed():
            page.fail("the key was asked for again in the same session")
        if page.button("Forget API key") is None:
            page.fail("no way to forget the key")
        ok("with a key set: asked once, a wrong key refused, kept in sessionStorage only")
    finally:
        page.close()


def main():
    plan = json.loads(sys.argv[1])
    plan["archive"] = os.path.abspath(plan["archive"])
    # A failure's screenshot from an earlier run would mislead.
    for stale in ("dashboard-failure.png",):
        if os.path.exists(os.path.join(plan["screenshots"], stale)):
            os.remove(os.path.join(plan["screenshots"], stale))
    page = Page(plan["screenshots"])
    try:
        version = page.driver.capabilities.get("browserVersion")
        print(f"     Chromium {version}", flush=True)
        open_dashboard(page, plan["url"])
        check_refusals_are_text(page)
        check_huggingface_upload(page, plan)
        check_store(page, plan)
        check_zip_upload(page, plan)
        check_slow_upload_and_cancel(page, plan)
        check_filters(page, plan)
        check_delete(page, plan)
        check_labels_and_console(page)
    finally:
        page.close()
    check_api_key(plan)


if __name__ == "__main__":
    main()
