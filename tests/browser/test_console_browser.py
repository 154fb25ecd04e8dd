"""The admin console in a real browser: headless Chromium (Debian's, which the project's
``scripts/install-browser.sh`` installs when it is missing), driven over its DevTools protocol
(`tests.browser.cdp`) as a person would: the test focuses each field and types into it (trusted
key events), chooses options, and clicks the buttons with the mouse; the page has no script.

It logs in as the server's administrator, adds a department, adds a word to a new word list,
and sends an announcement to everyone online, which a slixmpp client connected over TCP must
receive. Each step's page is checked (the console says what it did, and shows it) and kept as a
screenshot, ``console-<step>.png`` (the accounts and reminders pages too), in the test's tmp dir
and copied to ``artifacts/``. The page must log no error (a stylesheet refused by the
Content-Security-Policy would be one).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from imactor.config import DEFAULT_MODULES
from tests.browser.cdp import JavaScriptError, Page, open_chromium
from tests.browser.desk import DESK_PASSWORD, SlixmppThread
from tests.support.server import ServerProcess, running_server
from tests.support.timeouts import TIMEOUT

REPO = Path(__file__).resolve().parents[2]
ADMIN, PASSWORD = "boss", "browser console password"
MODULES = "modules = [" + ", ".join(f'"{m}"' for m in (*DEFAULT_MODULES, "word_filter", "directory")) + "]\n"
CONSOLE = '\n[listen.console]\nenabled = true\nhost = "127.0.0.1"\nport = 0\n'
#: Seconds for the page that a click asks for to be there.
NAVIGATION_TIMEOUT = 15.0


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; the project's script installs it when it is missing."""
    if shutil.which("chromium") is None:
        subprocess.run(["bash", str(REPO / "scripts" / "install-browser.sh")], check=True, timeout=1800)
    found = shutil.which("chromium")
    assert found is not None, "scripts/install-browser.sh did not install chromium"
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    admins = f'admins = ["{ADMIN}@localhost"]\n'
    users = [(ADMIN, PASSWORD), ("desk", DESK_PASSWORD)]
    with running_server(
        tmp_path_factory.mktemp("console-browser"),
        users=users,
        server_options=admins + MODULES,
        extra=CONSOLE,
    ) as process:
        yield process


async def fill(page: Page, selector: str, text: str) -> None:
    """Focus the field and type `text` into it, as the keyboard would."""
    await page.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
    await page.type_text(text)


async def choose(page: Page, selector: str, value: str) -> None:
    """Choose the option `value` of a select element (what picking it in its list does)."""
    chosen = await page.evaluate(
        f"(() => {{ const s = document.querySelector({json.dumps(selector)}); s.value = {json.dumps(value)};"
        " s.dispatchEvent(new Event('change', {bubbles: true})); return s.value; })()"
    )
    assert chosen == value, f"{selector} has no option {value!r}"


async def click_and_wait(page: Page, selector: str) -> str:
    """Click the element with the mouse and wait for the page the click leads to; its path."""
    await page.evaluate("window.consoleTestOldPage = true")
    box = await page.evaluate(
        f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
        " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
    )
    for kind in ("mousePressed", "mouseReleased"):
        await page.call(
            "Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1
        )
    with trio.fail_after(NAVIGATION_TIMEOUT):
        while True:
            try:
                state = await page.evaluate(
                    "window.consoleTestOldPage === undefined && document.readyState === 'complete'"
                    " ? location.pathname : null"
                )
            except (JavaScriptError, RuntimeError):
                state = None  # the old page is going away
            if state is not None:
                return str(state)
            await trio.sleep(0.05)


async def text_of(page: Page) -> str:
    return str(await page.evaluate("document.body.innerText"))


async def test_an_admin_adds_a_department_and_a_word_and_announces_in_chromium(
    tmp_path: Path, chromium: str, server: ServerProcess, desk: SlixmppThread
) -> None:
    base = f"http://127.0.0.1:{server.ports['console']}"
    shots: list[Path] = []

    async def shot(page: Page, name: str) -> None:
        shots.append(await page.screenshot(tmp_path / f"console-{name}.png"))

    with trio.fail_after(4 * TIMEOUT):
        async with open_chromium(
            f"{base}/login", tmp_path / "profile", chromium=chromium, size=(1280, 900)
        ) as page:
            await shot(page, "login")
            await fill(page, "input[name=jid]", f"{ADMIN}@localhost")
            await fill(page, "input[name=password]", PASSWORD)
            landed = await click_and_wait(page, "form[action='/login'] button")
            assert landed == "/", await text_of(page)
            overview = await text_of(page)
            assert "workers running" in overview, overview
            assert f"{ADMIN}@localhost" in overview
            await shot(page, "overview")

            await page.goto(f"{base}/departments")
            await fill(page, "form input[name=name][required]", "Engineering")
            assert await click_and_wait(page, "form:has(input[value=add]) button") == "/departments"
            shown = await text_of(page)
            assert "Added the department Engineering" in shown, shown
            assert "Engineering" in await page.evaluate("document.querySelector('table').innerText")
            await shot(page, "department")

            await page.goto(f"{base}/words")
            await fill(page, "input[name=name]", "confidential")
            await choose(page, "select[name=list_action]", "mask")
            await fill(page, "textarea[name=lines]", "project nightingale")
            assert await click_and_wait(page, "form:has(textarea[name=lines]) button") == "/words"
            shown = await text_of(page)
            assert "confidential: added 1 words" in shown, shown
            assert "projectnightingale" in shown  # stored folded: matching ignores separators
            await shot(page, "word")

            await page.goto(f"{base}/announcements")
            await fill(page, "form:has(input[value=online]) input[name=subject]", "Fire drill")
            await fill(page, "form:has(input[value=online]) textarea[name=body]", "Everyone out at 15:00")
            assert await click_and_wait(page, "form:has(input[value=online]) button") == "/announcements"
            shown = await text_of(page)
            assert "The announcement was sent to every online user" in shown, shown
            await shot(page, "announcement")
            sender = await trio.to_thread.run_sync(desk.expect, "Everyone out at 15:00")
            assert sender == "localhost"
            await page.goto(f"{base}/accounts")  # two more pages, for the record
            assert "desk@localhost" in await text_of(page)
            await shot(page, "accounts")
            await page.goto(f"{base}/reminders")
            assert "No pending reminders." in await text_of(page)
            await shot(page, "reminders")
            errors = [line for line in page.console if "error" in line.lower()]
            assert not errors, errors
    (REPO / "artifacts").mkdir(exist_ok=True)
    for taken in shots:
        assert taken.read_bytes().startswith(b"\x89PNG")
        kept = REPO / "artifacts" / taken.name
        shutil.copyfile(taken, kept)
        print(f"screenshot: {taken} (copied to {kept})")
