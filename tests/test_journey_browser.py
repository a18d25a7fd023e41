"""The journey page (API.md 9) in a real headless Chromium, on the demo's journeys
loaded by the installed ``contextsvc demo`` into a store a real gunicorn serves:
what is on screen for the dropped wireless caller and for the customer with the most
services, on a laptop (1366x768) and a phone (390x844); details after a click and
after Enter; the empty and error states; the API key prompt; that the page asks
nothing of any host but the service; contrast.

Needs Debian's chromium and chromium-driver; .ci/run installs them. Without them the
tests are skipped and say why. Screenshots go to build/screenshots/.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from datetime import datetime, timezone
from urllib.parse import urlsplit

import pytest

from tests.gunicorn_server import ROOT, Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
COMMAND = shutil.which("contextsvc", path=os.path.dirname(sys.executable))
SCREENSHOTS = os.path.join(ROOT, "build", "screenshots")
B = "/genesys/1/cs"
ALL = "active_states=true&completed_states=true&active_tasks=true&completed_tasks=true"
LAPTOP, PHONE = (1366, 768), (390, 844)
# demo services idle for longer than this are shown auto-completed (API.md 6.2), so
# that the page has all three statuses to tell apart
IDLE = "3d"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="no Chromium: install Debian's chromium and chromium-driver to run the browser test")


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A server on the demo's journeys, up to the current hour; what the command said."""
    db = str(tmp_path_factory.mktemp("journey") / "contextsvc.json")
    env = {"CONTEXTSVC_LIFECYCLE_AUTO_COMPLETE_AFTER": IDLE}
    server = Server(db, workers=2, extra_env=env)
    try:
        now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        environ = {**os.environ, "CONTEXTSVC_STORAGE_PATH": db, **env}
        environ.pop("CONTEXTSVC_CONFIG", None)
        result = subprocess.run(
            [COMMAND, "demo", "--now", now.isoformat(), "--url",
             f"http://127.0.0.1:{server.port}{B}"],
            capture_output=True, text=True, timeout=120, env=environ)
        assert result.returncode == 0, result.stderr
        pages = re.search(r"open the journey page: (\S+) and (\S+?)(?:;|$)", result.stdout)
        assert pages, result.stdout
        yield server, pages.groups()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1366,900",
                "--lang=en-US", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(arg)
    # every request the page makes, and its console (CSP violations, script errors)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser):
    """The browser, with the helpers of these tests; the logs of earlier tests dropped."""
    browser.get_log("performance")
    browser.get_log("browser")
    return Page(browser)


class Page:
    def __init__(self, driver):
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.wait = WebDriverWait(driver, 20, poll_frequency=0.05)

    def size(self, width: int, height: int) -> None:
        """The viewport of a laptop or a phone, exactly."""
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1,
            "mobile": width < 600})

    def open(self, url: str) -> None:
        self.driver.get(url)
        self.wait.until(lambda d: d.execute_script(
            "const m = document.querySelector('#message');"
            "return document.readyState === 'complete' && m && m.textContent"
            " && !m.textContent.startsWith('Loading')"))

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def click(self, css: str) -> None:
        """Scroll it to the middle of the window (not under the axis stuck to its top)
        and click it."""
        from selenium.common.exceptions import StaleElementReferenceException

        for attempt in range(5):  # the timeline is drawn again when its width changes
            try:
                element = self.find(css)
                self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})",
                                           element)
                element.click()
                return
            except StaleElementReferenceException:
                if attempt == 4:
                    raise

    def activate(self, css: str) -> None:
        """Click it; where another mark is drawn over it (marks a few minutes apart
        overlap on a phone), open it as a keyboard user does: focus, Enter."""
        from selenium.common.exceptions import ElementClickInterceptedException
        from selenium.webdriver.common.keys import Keys

        try:
            self.click(css)
        except ElementClickInterceptedException:
            element = self.find(css)
            self.driver.execute_script("arguments[0].focus()", element)
            element.send_keys(Keys.ENTER)

    def text(self, css: str) -> str:
        return self.find(css).text

    def rows(self) -> list[dict]:
        """What each row of the timeline says: the service's name, status label, and
        the names and statuses of its states and tasks as drawn."""
        return self.driver.execute_script("""
            return [...document.querySelectorAll('#timeline .row')].map(row => ({
              id: Number(row.dataset.service),
              name: row.querySelector('.svc-name').textContent,
              badge: row.querySelector('.svc .badge').textContent,
              status: row.querySelector('.svc').dataset.status,
              states: [...row.querySelectorAll('.seg')].map(
                s => [s.textContent, s.dataset.status]),
              tasks: [...row.querySelectorAll('.task')].map(t => t.dataset.status),
            }));""")

    def details(self) -> dict:
        """The open details panel: its title, and each of its lists as {term: text}."""
        self.wait.until(lambda d: self.find("#details").is_displayed())
        return self.driver.execute_script("""
            const panel = document.querySelector('#details');
            const lists = {};
            let heading = 'facts';
            for (const el of panel.querySelectorAll('#details-body > *')) {
              if (el.tagName === 'H3') heading = el.textContent.replace(/ \\(\\d+\\)$/, '');
              if (el.tagName === 'DL') {
                const out = {};
                for (const dt of el.querySelectorAll(':scope > dt'))
                  out[dt.textContent] = dt.nextElementSibling.textContent;
                lists[heading] = out;
              }
              if (el.tagName === 'P' && el.classList.contains('none'))
                lists[heading] = el.textContent;
            }
            return {title: panel.querySelector('#details-title').textContent,
                    focused: panel.contains(document.activeElement), ...lists};""")

    def in_view(self, css: str) -> bool:
        return self.driver.execute_script("""
            const r = document.querySelector(arguments[0]).getBoundingClientRect();
            return r.top >= 0 && r.top < innerHeight && r.left >= 0 && r.right <= innerWidth;""",
                                          css)

    def overflows(self) -> bool:
        return self.driver.execute_script(
            "return document.documentElement.scrollWidth > innerWidth")

    def shot(self, name: str) -> None:
        os.makedirs(SCREENSHOTS, exist_ok=True)
        self.driver.save_screenshot(os.path.join(SCREENSHOTS, f"{name}.png"))

    def requests(self) -> list[str]:
        """Every URL the browser asked for since the last call: the performance log's
        requests, and the page's own resource timing entries."""
        urls = []
        for entry in self.driver.get_log("performance"):
            event = json.loads(entry["message"])["message"]
            if event["method"] == "Network.requestWillBeSent":
                urls.append(event["params"]["request"]["url"])
        urls += self.driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        return urls

    def only_from(self, port: int, refused: int = 401) -> None:
        """Every request over the network went to the service (the browser's own
        chrome:// pages aside), and the console has no error (a request the
        Content-Security-Policy refused would be one)."""
        urls = self.requests()
        ours = [u for u in urls if urlsplit(u).netloc == f"127.0.0.1:{port}"]
        assert any("/journey/assets/journey.js" in u for u in ours)
        assert any("/services" in u for u in ours)
        assert [u for u in urls if urlsplit(u).scheme not in ("chrome", "data")
                and urlsplit(u).netloc != f"127.0.0.1:{port}"] == []
        problems = [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"
                    # the API's 401s, which the page answers by asking for a key
                    # (or the status a test has the API refuse on purpose)
                    and not (e["source"] == "network"
                             and f"status of {refused}" in e["message"])]
        assert problems == []


def api(server: Server, path: str):
    status, body, _ = server.request("GET", path)
    assert status == 200, (path, body)
    return body


def status_of(resource: dict) -> str:
    completed = resource.get("completed")
    return "active" if completed is None else (
        "auto" if completed.get("auto_completed") is True else "completed")


def expected_rows(services: list[dict]) -> list[dict]:
    """What the rows must show, from the API's own answer."""
    label = {"active": "Active", "completed": "Completed", "auto": "Auto-completed"}
    rows = []
    for s in services:
        states = sorted(s["active_states"] + s["completed_states"],
                        key=lambda x: (x["started"]["timestamp"], x["state_id"]))
        rows.append({"id": s["service_id"], "name": str(s["service_type"]),
                     "badge": label[status_of(s)], "status": status_of(s),
                     "states": [[str(x["state_type"]), status_of(x)] for x in states],
                     "tasks": len(s["active_tasks"] + s["completed_tasks"])})
    return rows


def on_screen(rows: list[dict]) -> list[dict]:
    return [{**row, "tasks": len(row["tasks"])} for row in rows]


# ---------------------------------------------------------------- the stories
@pytest.mark.parametrize("screen", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_the_dropped_wireless_caller(demo, page, screen):
    from selenium.webdriver.common.by import By

    server, (customer_page, _) = demo
    name = "laptop" if screen == LAPTOP else "phone"
    page.size(*screen)
    page.open(customer_page)  # the URL `contextsvc demo` printed
    services = api(server, f"{B}/customers/ABC1234/services?{ALL}")
    assert page.text("#journey-title") == "Customer ABC1234"
    assert on_screen(page.rows()) == expected_rows(services)
    rows = page.rows()
    assert [r["name"] for r in rows] == ["new-wireless-account", "device-delivery"]
    assert [r["badge"] for r in rows] == ["Completed", "Completed"]
    assert [s for s, _ in rows[0]["states"]] == ["ivr-menu", "agent-queue", "account-setup"]
    assert page.text("#message") == "2 services: 2 completed."
    assert page.find("#q").get_attribute("value") == "ABC1234"
    assert page.text("#request") == f"GET {B}/customers/ABC1234/services?{ALL}"
    assert not page.overflows()
    page.driver.execute_script("document.querySelector('#journey-title').scrollIntoView()")
    page.shot(f"journey-wireless-{name}")

    # the state where the call dropped: its events and attached data
    wireless = rows[0]["id"]
    queue = page.find(f'.row[data-service="{wireless}"] .seg:nth-of-type(2)')
    assert queue.text == "agent-queue"
    # zoomed out to two days, the state is a sliver: zoom to the service first
    page.click(f'.row[data-service="{wireless}"] .svc')
    assert page.details()["title"] == f"Service {wireless}: new-wireless-account"
    page.click("#details [data-zoom]")
    page.wait.until(lambda d: page.find(
        f'.row[data-service="{wireless}"] .seg:nth-of-type(2)').size["width"] > 60)
    page.click(f'.row[data-service="{wireless}"] .seg:nth-of-type(2)')
    shown = page.details()
    assert shown["title"] == f"State 2: agent-queue · service {wireless}"
    assert shown["facts"]["Status"] == "Completed"
    assert shown["facts"]["Disposition"] == "answered"
    assert shown["facts"]["When"].endswith("(28 min 42 s)")
    assert shown["Attached data"]["queue"] == "wireless-sales"
    assert json.loads(shown["Attached data"]["call_dropped"]) == {
        "interaction_id": "IVR-0001", "waited_seconds": 604}
    assert shown["Completion event"]["resource_id"] == "5005"
    assert "timestamp" in shown["Start event"]
    assert shown["focused"]
    assert page.in_view("#details-title")
    assert not page.overflows()
    page.shot(f"journey-wireless-state-{name}")

    # the service itself: who identified the caller, and the account opened
    page.click("#details .refs button, #details dd button")  # its service
    shown = page.details()
    assert shown["title"] == f"Service {wireless}: new-wireless-account"
    assert shown["facts"]["Customer id"] == "ABC1234"
    assert shown["facts"]["Contact key"] == "408-832-7799"
    assert shown["facts"]["Disposition description"] == "account opened"
    assert shown["Attached data"]["verified_by"] == "agent"
    assert json.loads(shown["Attached data"]["account"]) == {
        "plan": "Unlimited Plus", "autopay": True}
    assert "active_states" not in shown["Attached data"]
    page.driver.find_element(By.ID, "close-details").click()
    assert not page.find("#details").is_displayed()
    page.only_from(server.port)


def test_keyboard_reaches_every_service_state_and_task_and_enter_opens_it(demo, page):
    from selenium.webdriver.common.keys import Keys

    server, (customer_page, _) = demo
    page.size(*LAPTOP)
    page.open(customer_page)
    row = page.find("#timeline .row")
    head = row.find_element("css selector", ".svc")
    page.driver.execute_script("arguments[0].focus()", head)
    reached = []
    expected = 1 + len(row.find_elements("css selector", ".seg, .task"))
    for _ in range(expected):
        active = page.driver.switch_to.active_element
        reached.append((active.get_attribute("data-kind"), active.get_attribute("data-ref")))
        # a sliver of a segment cannot show its name: the line above the timeline does
        assert page.text("#focus-info") == active.get_attribute("aria-label")
        active.send_keys(Keys.TAB)
        if len(reached) == 3:
            page.shot("journey-keyboard-focus-laptop")
    kinds = [kind for kind, _ in reached]
    assert kinds == ["service"] + ["state"] * 3 + ["task"] * 7
    assert len(set(reached)) == expected

    # Enter on a task opens it
    task = page.find("#timeline .row .task:nth-of-type(5)")  # the 2nd task: 3 states first
    ref = task.get_attribute("data-ref")
    page.driver.execute_script("arguments[0].focus()", task)
    page.driver.switch_to.active_element.send_keys(Keys.ENTER)
    shown = page.details()
    assert shown["title"].startswith("Task 2: select-service")
    assert shown["Attached data"]["ivr_choice"] == "2"
    assert "State 1: ivr-menu" in shown["facts"]["State"]
    # Escape closes the details and gives the focus back to the task
    page.driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    assert not page.find("#details").is_displayed()
    assert page.driver.switch_to.active_element.get_attribute("data-ref") == ref
    page.only_from(server.port)


def busiest(server: Server) -> tuple[str, list[dict]]:
    """The demo customer with the most services, and their services."""
    counts: dict[str, int] = {}
    sid = 1
    while True:
        status, body, _ = server.request("GET", f"{B}/services/{sid}")
        if status == 404 and sid > 130:
            break
        if status == 200 and body.get("customer_id"):
            counts[body["customer_id"]] = counts.get(body["customer_id"], 0) + 1
        sid += 1
    customer = max(sorted(counts), key=counts.get)
    return customer, api(server, f"{B}/customers/{customer}/services?{ALL}")


@pytest.mark.parametrize("screen", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_a_customer_with_many_services(demo, page, screen):
    server, _ = demo
    customer, services = busiest(server)
    assert len(services) >= 5
    name = "laptop" if screen == LAPTOP else "phone"
    page.size(*screen)
    page.open(f"http://127.0.0.1:{server.port}/journey?customer_id={customer}")
    assert page.text("#journey-title") == f"Customer {customer}"
    assert on_screen(page.rows()) == expected_rows(services)
    assert not page.overflows()
    page.driver.execute_script("document.querySelector('#journey-title').scrollIntoView()")
    page.shot(f"journey-many-{name}")

    # a task with attached data, clicked where it is drawn
    task = next(t for s in services for t in s["completed_tasks"] + s["active_tasks"]
                if set(t) - {"task_id", "task_type", "state_id", "started", "completed",
                             "duration", "disposition", "disposition_desc", "est_duration",
                             "demo"})
    owner = next(s for s in services if task in s["completed_tasks"] + s["active_tasks"])
    ref = f"service-{owner['service_id']}-task-{task['task_id']}"
    # over three weeks the marks of one service overlap: zoom to it, then click
    page.click(f'.row[data-service="{owner["service_id"]}"] .svc')
    page.click("#details [data-zoom]")
    page.activate(f'[data-ref="{ref}"]')
    shown = page.details()
    assert shown["title"] == f"Task {task['task_id']}: {task['task_type']} · service " \
                             f"{owner['service_id']}"
    for key in set(task) - {"task_id", "task_type", "state_id", "started", "completed",
                            "duration", "disposition", "disposition_desc", "est_duration"}:
        text = shown["Attached data"][key]
        assert (text if isinstance(task[key], str) else json.loads(text)) == task[key]
    page.shot(f"journey-many-task-{name}")
    page.only_from(server.port)


def test_active_completed_and_auto_completed_differ_by_more_than_colour(demo, page):
    server, (_, contact_page) = demo
    page.size(*LAPTOP)
    # the caller still waiting: the page the demo printed for a contact key
    page.open(contact_page)
    assert page.text("#journey-title") == "Contact key 408-555-0142 (not identified)"
    services = api(server, f"{B}/services/anonymous/408-555-0142?{ALL}")
    assert on_screen(page.rows()) == expected_rows(services)
    assert page.rows()[0]["badge"] == "Active"
    page.shot("journey-waiting-caller-laptop")

    # a customer with a service the server completed by itself
    auto = next(s for sid in range(1, 200)
                for s in [server.request("GET", f"{B}/services/{sid}")[1]]
                if s and s.get("customer_id") and status_of(s) == "auto")
    page.open(f"http://127.0.0.1:{server.port}{B}/journey?customer_id={auto['customer_id']}")
    rows = {r["id"]: r for r in page.rows()}
    assert rows[auto["service_id"]]["badge"] == "Auto-completed"
    page.click(f'.row[data-service="{auto["service_id"]}"] .svc')
    shown = page.details()
    assert shown["Completion event"]["auto_completed"] == "true"
    page.shot("journey-auto-completed-laptop")

    # each status: its own label, fill pattern and task mark shape
    looks = page.driver.execute_script("""
        const out = {};
        for (const status of ['active', 'completed', 'auto']) {
          const swatch = getComputedStyle(document.querySelector('.legend .swatch.' + status));
          const mark = getComputedStyle(document.querySelector('.legend .mark-sample.' + status));
          out[status] = {image: swatch.backgroundImage.split('(')[0],
                         colour: swatch.backgroundColor, shape: mark.transform,
                         hollow: mark.borderTopWidth};
        }
        out.legend = document.querySelector('.legend').textContent;
        return out;""")
    assert {looks[s]["image"] for s in ("active", "completed", "auto")} == {
        "repeating-linear-gradient", "none"}
    assert looks["active"]["image"] == looks["auto"]["image"]  # but at another angle:
    css = open(os.path.join(ROOT, "contextsvc/api/static/journey/journey.css")).read()
    assert re.search(r"\.active \{ background: repeating-linear-gradient\(135deg", css)
    assert re.search(r"\.auto \{ background: repeating-linear-gradient\(90deg", css)
    assert len({(looks[s]["shape"], looks[s]["hollow"]) for s in
                ("active", "completed", "auto")}) == 3
    for label in ("Active", "Completed", "Auto-completed"):
        assert label in looks["legend"]
    page.only_from(server.port)


def test_contrast_is_wcag_aa(demo, page):
    server, (customer_page, _) = demo
    page.size(*LAPTOP)
    page.open(customer_page)
    colours = page.driver.execute_script("""
        const s = getComputedStyle(document.documentElement);
        const names = ['ink', 'muted', 'bg', 'panel', 'link', 'error', 'on-status', 'active',
                       'active-2', 'completed', 'auto', 'auto-2'];
        const out = Object.fromEntries(names.map(n => [n, s.getPropertyValue('--' + n).trim()]));
        out.segText = getComputedStyle(document.querySelector('.seg')).color;
        out.metaText = getComputedStyle(document.querySelector('.svc-meta')).color;
        return out;""")

    def luminance(colour: str) -> float:
        if colour.startswith("rgb"):
            channels = [int(c) / 255 for c in re.findall(r"\d+", colour)[:3]]
        else:
            channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
                   for c in channels]
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    def ratio(a: str, b: str) -> float:
        la, lb = sorted((luminance(a), luminance(b)))
        return (lb + 0.05) / (la + 0.05)

    pairs = [(fg, bg) for fg in ("ink", "muted", "link", "error") for bg in ("bg", "panel")]
    pairs += [("on-status", c) for c in ("active", "active-2", "completed", "auto", "auto-2")]
    low = {(fg, bg): round(ratio(colours[fg], colours[bg]), 2) for fg, bg in pairs
           if ratio(colours[fg], colours[bg]) < 4.5}
    assert low == {}
    assert luminance(colours["segText"]) == luminance(colours["on-status"])
    assert luminance(colours["metaText"]) == luminance(colours["muted"])


# ---------------------------------------------------------------- empty and errors
def test_empty_and_error_states_say_what_happened(demo, page):
    server, _ = demo
    page.size(*PHONE)
    page.open(f"http://127.0.0.1:{server.port}/journey?customer_id=NOBODY-0000")
    message = page.text("#message")
    assert message.startswith("No services for customer id “NOBODY-0000”.")
    assert "unknown here" in message
    assert not page.find("#journey").is_displayed()
    page.shot("journey-unknown-customer-phone")

    page.open(f"http://127.0.0.1:{server.port}/journey?contact_key=408-832-7799"
              "&services=active")
    assert page.text("#message").startswith(
        "No anonymous active services with contact key “408-832-7799”.")
    assert "look it up by customer id" in page.text("#message")

    # the form: by contact key, from the keyboard
    from selenium.webdriver.common.keys import Keys

    page.click('input[value="contact_key"]')
    assert page.text("#q-label") == "Contact key"
    field = page.find("#q")
    field.clear()
    field.send_keys("a/b", Keys.ENTER)
    page.wait.until(lambda d: "cannot be looked up" in page.text("#message"))
    assert page.find("#message").get_attribute("role") == "alert"
    from selenium.webdriver.support.select import Select

    Select(page.find("#which")).select_by_visible_text("active and completed")
    field = page.find("#q")
    field.clear()
    field.send_keys("408-832-7799", Keys.ENTER)
    page.wait.until(lambda d: page.all("#timeline .row"))
    assert page.driver.current_url.endswith("/journey?contact_key=408-832-7799")
    assert [r["name"] for r in page.rows()] == ["coverage-check"]
    page.only_from(server.port)


# ---------------------------------------------------------------- API keys
class KeyProxy(http.server.ThreadingHTTPServer):
    """A reverse proxy in front of the service that wants ``Authorization: Bearer
    <key>`` on the API, as the service does with keys on (API.md 8.1): 401
    ``UnauthorizedException`` with ``WWW-Authenticate: Bearer`` without it. The page
    and its assets need no key."""

    def __init__(self, upstream: int, key: str):
        self.upstream, self.key, self.seen = upstream, key, []
        super().__init__(("127.0.0.1", 0), _KeyProxyHandler)


class _KeyProxyHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the http.server API)
        proxy = self.server
        auth = self.headers.get("Authorization")
        proxy.seen.append((self.path, auth))
        if "/journey" not in self.path and auth != f"Bearer {proxy.key}":
            body = json.dumps({"message": "A valid API key is required",
                               "exception": "UnauthorizedException"}).encode()
            self.send_response(401)
            self.send_header("WWW-Authenticate", "Bearer")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream, timeout=10)
        conn.request("GET", self.path)
        response = conn.getresponse()
        body = response.read()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("connection", "transfer-encoding", "server", "date"):
                self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        conn.close()

    def log_message(self, *args):
        pass


def key_flow(page: Page, url: str, key: str) -> None:
    """With keys on: the page asks for a key, keeps it for the tab, sends it."""
    from selenium.webdriver.common.keys import Keys

    page.size(*LAPTOP)
    page.driver.get(url)
    page.wait.until(lambda d: page.find("#key-form").is_displayed())
    assert "asks for an API key" in page.text("#key-why")
    assert page.driver.switch_to.active_element.get_attribute("id") == "key"
    page.shot("journey-key-asked-laptop")
    page.find("#key").send_keys("not-the-key", Keys.ENTER)
    page.wait.until(lambda d: "refused this key" in page.text("#key-why"))
    page.find("#key").send_keys(key, Keys.ENTER)
    page.wait.until(lambda d: page.all("#timeline .row"))
    assert [r["name"] for r in page.rows()] == ["new-wireless-account", "device-delivery"]
    assert page.driver.execute_script(
        "return sessionStorage.getItem('contextsvc.apiKey')") == key
    assert page.driver.execute_script("return localStorage.length") == 0
    assert page.find("#key-note").is_displayed()
    # a reload in the same tab keeps it
    page.driver.refresh()
    page.wait.until(lambda d: page.all("#timeline .row"))
    # forgetting it asks again at the next lookup
    page.click("#forget-key")
    assert page.driver.execute_script(
        "return sessionStorage.getItem('contextsvc.apiKey')") is None
    page.click("form#lookup button[type=submit]")
    page.wait.until(lambda d: page.find("#key-form").is_displayed())


def test_a_key_is_asked_for_kept_for_the_tab_and_sent_as_bearer(demo, page):
    server, _ = demo
    key = base64.urlsafe_b64encode(os.urandom(18)).decode()
    proxy = KeyProxy(server.port, key)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        port = proxy.server_address[1]
        key_flow(page, f"http://127.0.0.1:{port}{B}/journey?customer_id=ABC1234", key)
        lookups = [(path, auth) for path, auth in proxy.seen if "/customers/" in path]
        assert [auth for _, auth in lookups[:3]] == [None, "Bearer not-the-key", f"Bearer {key}"]
        assert all(auth is None for path, auth in proxy.seen if "/journey" in path)
        page.only_from(port)
    finally:
        proxy.shutdown()
        proxy.server_close()


def keys_built() -> bool:
    """Whether this build has API keys (API.md 8.1): its configuration takes a key
    in ``[api_keys]``."""
    import tempfile

    from contextsvc import config

    with tempfile.TemporaryDirectory() as tmp:
        ini = os.path.join(tmp, "keys.ini")
        with open(ini, "w") as handle:
            handle.write(f"[api_keys]\nprobe = read {'0' * 64}\n")
        try:
            return bool(config.load(environ={"CONTEXTSVC_CONFIG": ini}).get("api_keys"))
        except config.ConfigError:
            return False


@pytest.mark.skipif(not keys_built(), reason="API keys (API.md 8.1) are not built yet: "
                    "the key prompt is tested behind a proxy that wants one")
def test_the_key_prompt_with_the_service_own_keys(tmp_path, page):
    import hashlib

    key = "journey-" + base64.urlsafe_b64encode(os.urandom(18)).decode()
    ini = tmp_path / "keys.ini"
    ini.write_text(f"[api_keys]\nviewer = read {hashlib.sha256(key.encode()).hexdigest()}\n")
    db = str(tmp_path / "db.json")
    env = {"CONTEXTSVC_CONFIG": str(ini), "CONTEXTSVC_STORAGE_PATH": db}
    result = subprocess.run([COMMAND, "demo"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    server = Server(db, workers=1, extra_env={"CONTEXTSVC_CONFIG": str(ini)})
    try:
        key_flow(page, f"http://127.0.0.1:{server.port}{B}/journey?customer_id=ABC1234", key)
        page.only_from(server.port)
    finally:
        server.stop()


# ---------------------------------------------------------------- tenants
@pytest.mark.file_engine("tenants given as data files")
def test_the_page_asks_for_the_contact_center_and_sends_it(tmp_path, page):
    """With tenants (API.md 8.2) the page has a contact center field, kept in its
    address, and sends it as ContactCenterId: the demo loaded into globex shows
    there, the default tenant (acme) has none of it, and an unknown one is said."""
    ini = tmp_path / "tenants.ini"
    ini.write_text(f"[tenants]\nacme = {tmp_path / 'acme.json'}\n"
                   f"globex = {tmp_path / 'globex.json'}\nglobex.id = 7\ndefault = acme\n")
    env = {"CONTEXTSVC_CONFIG": str(ini)}
    result = subprocess.run([COMMAND, "demo", "--tenant", "globex"], capture_output=True,
                            text=True, timeout=120, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    assert "-H 'ContactCenterId: globex'" in result.stdout
    assert "/journey?customer_id=ABC1234&tenant=globex" in result.stdout
    server = Server(str(tmp_path / "unused.json"), workers=1, extra_env=env)
    try:
        base = f"http://127.0.0.1:{server.port}{B}/journey"
        page.size(*LAPTOP)
        page.open(f"{base}?customer_id=ABC1234&tenant=globex")
        assert page.all("#timeline .row"), page.text("#message")
        assert page.find("#tenant").get_attribute("value") == "globex"
        page.shot("journey-tenant-laptop")

        page.open(f"{base}?customer_id=ABC1234")  # the default tenant, acme: nothing there
        assert page.text("#message").startswith("No services for customer id “ABC1234”.")

        page.open(f"{base}?customer_id=ABC1234&tenant=initech")
        assert page.text("#message").startswith(
            "This service has no contact center “initech” (400).")
        assert "'ContactCenterId'='initech' not configured" in page.text("#message")

        # typed into the form, by number: the address keeps it
        from selenium.webdriver.common.keys import Keys

        field = page.find("#tenant")
        field.clear()
        field.send_keys("7", Keys.ENTER)
        page.wait.until(lambda d: page.all("#timeline .row"))
        assert page.driver.current_url.endswith("/journey?customer_id=ABC1234&tenant=7")
        page.only_from(server.port, refused=400)  # the tenant initech
    finally:
        server.stop()
