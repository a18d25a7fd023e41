"""The interactive docs in a real headless Chromium: the page loads offline, lists
every operation, "Try it out" on start-service creates a service (201), and every
operation's prefilled example succeeds when sent unchanged.

Needs Debian's chromium and chromium-driver; .ci/run installs them. Without them the
test is skipped and says why."""

import json
import os
import shutil

import pytest

from tests.gunicorn_server import ROOT, Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
SCREENSHOTS = os.path.join(ROOT, "build", "screenshots")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="no Chromium: install Debian's chromium and chromium-driver to run the browser test")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(str(tmp_path_factory.mktemp("docs") / "contextsvc.json"), workers=2)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1800",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(arg)
    # the driver is named, so selenium never tries to download one
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_docs_list_operations_and_try_it_out_starts_a_service(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, document, _ = server.request("GET", "/genesys/1/cs/openapi.json")
    count = sum(len(ops) for ops in document["paths"].values())
    wait = WebDriverWait(browser, 30)
    browser.get(f"http://127.0.0.1:{server.port}/genesys/1/cs/docs")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= count)
    blocks = browser.find_elements(By.CSS_SELECTOR, ".opblock")
    assert len(blocks) == count
    paths = {e.text.replace("\u200b", "")
             for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/services/start", "/services/{sid}/states/transition",
            "/customers/{customer_id}/services/active"} <= paths
    os.makedirs(SCREENSHOTS, exist_ok=True)
    browser.save_screenshot(os.path.join(SCREENSHOTS, "docs.png"))

    block = browser.find_element(By.ID, "operations-services-start_service")
    block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait.until(lambda d: block.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
    block.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
    body = wait.until(lambda d: block.find_element(By.CSS_SELECTOR, "textarea.body-param__text"))
    body.clear()
    body.send_keys(json.dumps({"contact_key": "from-the-docs", "service_type": 7,
                               "note": "clicked"}))
    block.find_element(By.CSS_SELECTOR, "button.execute").click()
    status = wait.until(lambda d: block.find_element(
        By.CSS_SELECTOR, ".live-responses-table .response .response-col_status"))
    wait.until(lambda d: status.text.strip())
    browser.execute_script("arguments[0].scrollIntoView();", block)
    browser.save_screenshot(os.path.join(SCREENSHOTS, "docs-try-it-out.png"))
    assert status.text.strip().startswith("201")

    code, services, _ = server.request("GET", "/services/anonymous/from-the-docs")
    assert code == 200 and [(s["service_type"], s["note"]) for s in services] == [(7, "clicked")]
    print(f"\nscreenshots: {SCREENSHOTS}/docs.png, {SCREENSHOTS}/docs-try-it-out.png")


def test_every_prefilled_example_works_as_it_is(server, browser):
    """"Try it out" on every operation with the page's own example body, sent
    unchanged: each succeeds. Path ids name a fresh service with state 1 and task 1
    (so that no operation meets one an earlier one completed or deleted); every
    other parameter keeps its example."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, document, _ = server.request("GET", "/genesys/1/cs/openapi.json")
    operations = [(op["tags"][0], op["operationId"], method.upper(), path)
                  for path, ops in document["paths"].items() for method, op in ops.items()]
    wait = WebDriverWait(browser, 30, poll_frequency=0.05)
    browser.get(f"http://127.0.0.1:{server.port}/genesys/1/cs/docs")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= len(operations))
    failures = []
    for tag, operation_id, method, path in operations:
        _, body, _ = server.request("POST", "/services/start", {"contact_key": "examples"})
        sid = body["service_id"]
        assert server.request("POST", f"/services/{sid}/states/start", {})[0] == 201
        assert server.request("POST", f"/services/{sid}/tasks/start", {})[0] == 201
        block = browser.find_element(By.ID, f"operations-{tag}-{operation_id}")
        browser.execute_script("arguments[0].scrollIntoView();", block)
        block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
        wait.until(lambda d, b=block: b.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
        block.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
        if "sid" in path:
            field = wait.until(lambda d, b=block: b.find_element(
                By.CSS_SELECTOR, 'tr[data-param-name="sid"] input'))
            field.clear()
            field.send_keys(str(sid))
        block.find_element(By.CSS_SELECTOR, "button.execute").click()
        try:
            status = WebDriverWait(browser, 10, poll_frequency=0.05).until(
                lambda d, b=block: b.find_element(
                    By.CSS_SELECTOR, ".live-responses-table .response .response-col_status"))
            wait.until(lambda d, s=status: s.text.strip())
        except TimeoutException:  # the page refused to send: a required value is empty
            failures.append((method, path, None, "not sent"))
            continue
        code = int(status.text.strip()[:3])
        if not 200 <= code < 300:
            failures.append((method, path, code, block.find_element(
                By.CSS_SELECTOR, ".live-responses-table .response").text[:300]))
        block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()  # fold it again
    assert not failures
