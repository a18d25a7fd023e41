"""The docs page of a server with API keys, in a real headless Chromium: the page
itself needs no key, "Try it out" is refused (401) until a key is given through
"Authorize", and then sends it. Skipped without Chromium (see test_docs_browser)."""

import pytest

from contextsvc.domain import access
from tests.gunicorn_server import Server
from tests.test_docs_browser import CHROMIUM, DRIVER, browser  # noqa: F401  (a fixture)

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="no Chromium: install Debian's chromium and chromium-driver to run the browser test")

KEY = "wr1teK3y-Pa9sDf8gHj7kLz6xCv5bNm4qWe3rTy2uIo"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("docs-keys")
    ini = directory / "contextsvc.ini"
    ini.write_text(f"[api_keys]\nivr = write {access.digest(KEY).hex()}\n")
    srv = Server(str(directory / "contextsvc.json"), workers=1,
                 extra_env={"CONTEXTSVC_CONFIG": str(ini)})
    yield srv
    srv.stop()


def test_authorize_then_try_it_out_sends_the_key(server, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(f"http://127.0.0.1:{server.port}/genesys/1/cs/docs")
    block = wait.until(lambda d: d.find_element(By.ID, "operations-services-start_service"))

    def try_start(contact_key: str) -> str:
        if not block.find_elements(By.CSS_SELECTOR, "button.execute"):
            block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
            wait.until(lambda d: block.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
            block.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
        body = wait.until(lambda d: block.find_element(
            By.CSS_SELECTOR, "textarea.body-param__text"))
        body.clear()
        body.send_keys(f'{{"contact_key": "{contact_key}"}}')
        for old in block.find_elements(By.CSS_SELECTOR, ".btn-clear"):
            old.click()
        block.find_element(By.CSS_SELECTOR, "button.execute").click()
        status = wait.until(lambda d: block.find_element(
            By.CSS_SELECTOR, ".live-responses-table .response .response-col_status"))
        wait.until(lambda d: status.text.strip())
        return status.text.strip()[:3]

    assert try_start("before-authorize") == "401"

    browser.find_element(By.CSS_SELECTOR, "button.authorize").click()
    field = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".auth-container input"))
    field.send_keys(KEY)
    browser.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper button.authorize").click()
    browser.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper button.btn-done").click()

    assert try_start("after-authorize") == "201"
    headers = {"Authorization": f"Bearer {KEY}"}
    assert server.request("GET", "/services/anonymous/after-authorize",
                          headers=headers)[1][0]["contact_key"] == "after-authorize"
    assert server.request("GET", "/services/anonymous/before-authorize",
                          headers=headers)[1] == []
    # the key is kept for the page only: nothing in the browser's storage
    assert browser.execute_script("return window.localStorage.length") == 0
