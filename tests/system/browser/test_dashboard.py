"""
The dashboard at / in Chromium against the real server: it signs in with
the URL the server prints, connects, and shows file changes, search
progress, git state and unavailable features as they happen; it reconnects
by itself after a restart; its Backups card creates, restores and deletes
backups.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .support import Server

CHANNELS = ["files", "git", "diagnostics", "search", "validation", "ai-response", "backup"]
_SIGN_IN = re.compile(r"^\s*(http://\S+/#token=\S+)$", re.MULTILINE)


def open_dashboard(page: Any, server: Server) -> None:
    """
    Open the sign-in URL from the server's log, as a user would, and wait
    until the page is connected and subscribed to every built-in channel.
    """
    printed = _SIGN_IN.search(server.log())
    assert printed is not None, "the server did not print a sign-in URL:\n" + server.log()
    page.goto(printed.group(1))
    page.wait_for_selector('#status[data-status="open"]')
    wait_until(lambda: all(server.subscribers(c) >= 1 for c in CHANNELS), "the subscriptions")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def wait_in_page(page: Any, expression: str, timeout: float = 10.0) -> None:
    """
    Wait until C{expression} is true in the page. (Playwright's
    C{wait_for_function} evaluates its polls inside the page, which the
    dashboard's content security policy forbids, as it should.)
    """
    wait_until(lambda: page.evaluate(expression), expression, timeout)


def wait_for_watcher(server: Server) -> None:
    """
    Wait until the file watcher says it watches the root.
    """
    wait_until(lambda: f"Watching {server.root.resolve()}:" in server.log(), "the file watcher")


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_dashboard_loads_and_connects(page: Any, launch: Callable[..., Server]) -> None:
    """
    Opened through the URL the server prints, the dashboard keeps the token
    for this tab only (no cookie), drops it from the address bar, connects
    under its content security policy, names the root, has a panel with a
    count for every built-in channel, and says in words what each empty
    panel will show.
    """
    server = launch()
    open_dashboard(page, server)
    assert page.url == server.url
    assert page.evaluate("sessionStorage.getItem('cluso.token')") == server.token
    assert page.context.cookies() == []
    assert page.inner_text("#status") == "Connected"
    assert page.inner_text("#server-cwd") == str(server.root.resolve())
    for channel in CHANNELS:
        panel = page.locator(f'section[data-channel="{channel}"]')
        assert panel.locator("[data-count]").inner_text() == "0 events"
    assert page.inner_text("#files-list").startswith("No file changes yet.")
    assert page.inner_text("#git-events").startswith("No git events yet.")
    assert page.inner_text("#ai-answers").startswith("No answers yet.")
    assert page.inner_text("#validation-state").startswith("No validation results yet.")
    assert page.inner_text("#search-state") == "Type a query and press Search."
    page.wait_for_selector("#git-state[data-state]")
    assert page.inner_text("#git-state").strip()
    assert page.inner_text("#diagnostics-state").startswith("No diagnostics.")


def test_file_written_in_root_shows_within_two_seconds(
    page: Any, launch: Callable[..., Server]
) -> None:
    """
    A file written in the root by another program appears in the files
    panel within 2 s, with its event and an updated count.
    """
    server = launch()
    open_dashboard(page, server)
    wait_for_watcher(server)
    written = time.monotonic()
    (server.root / "notes.md").write_text("# today\n")
    page.wait_for_selector('#files-list li[data-file="notes.md"][data-event="add"]', timeout=2000)
    elapsed = time.monotonic() - written
    assert elapsed < 2.0
    assert page.inner_text("#panel-files [data-count]") != "0 events"


FILES = 1500
NEEDLES = 150


def test_search_shows_progress_and_results(
    page: Any, launch: Callable[..., Server], tmp_path: Path
) -> None:
    """
    A search from the search box drives the progress bar forward through
    intermediate values to full, lists every result, and a click on a
    result shows its line in the file.
    """
    root = tmp_path / "tree"
    for n in range(FILES):
        folder = root / f"pkg{n % 12}"
        folder.mkdir(parents=True, exist_ok=True)
        body = f"line one of {n}\n" + ("the needle is here\n" if n % 10 == 0 else "hay\n")
        (folder / f"module{n}.txt").write_text(body)
    server = launch(root=root)
    open_dashboard(page, server)
    page.evaluate(
        """() => {
            const bar = document.getElementById("search-progress");
            window.progress = [];
            new MutationObserver(() => {
                if (bar.hasAttribute("value")) window.progress.push([bar.value, bar.max]);
            }).observe(bar, { attributes: true });
        }"""
    )
    page.fill("#search-query", "needle")
    page.click("#search-start")
    page.wait_for_selector('#search-state[data-state="done"]')
    progress = page.evaluate("window.progress")
    values = [value for value, _ in progress]
    assert values == sorted(values), progress
    assert progress[-1][0] == progress[-1][1], progress
    assert len({value for value, top in progress if value < top}) >= 2, progress
    results = page.locator("#search-results button.result")
    assert results.count() == NEEDLES
    assert page.inner_text("#search-state") == (
        f"Done: {NEEDLES} results in {FILES} files searched."
    )
    results.first.click()
    hit = page.wait_for_selector("#search-preview pre.code .hit")
    assert "the needle is here" in hit.inner_text()


def test_git_commit_updates_git_panel(
    page: Any, launch: Callable[..., Server], tmp_path: Path
) -> None:
    """
    The git panel shows the branch and the changed files; a commit made
    by another program is announced in the panel and leaves the working
    tree clean there.
    """
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "dev@example.com")
    git(root, "config", "user.name", "Dev")
    (root / "README.md").write_text("hello\n")
    git(root, "add", "README.md")
    git(root, "commit", "-q", "-m", "Initial commit")
    (root / "draft.txt").write_text("draft\n")
    server = launch(root=root)
    open_dashboard(page, server)
    page.wait_for_selector('#git-files li[data-file="draft.txt"][data-status="??"]')
    assert page.inner_text("#git-branch-name") == "main"
    assert page.get_attribute("#git-state", "data-state") == "changes"

    git(root, "add", "draft.txt")
    git(root, "commit", "-q", "-m", "Add the draft")
    commit = page.wait_for_selector('#git-events li[data-type="commit"]')
    assert "Add the draft" in commit.inner_text()
    page.wait_for_selector('#git-state[data-state="clean"]')
    assert page.is_hidden("#git-files")


def test_reconnects_after_server_restart(page: Any, launch: Callable[..., Server]) -> None:
    """
    When the server stops, the page says it is reconnecting and why; when
    the server is back on the same port it reconnects by itself, and events
    reach its panels again.
    """
    server = launch()
    open_dashboard(page, server)
    server.post("api/events/files", {"file": "before.txt", "event": "change"})
    page.wait_for_selector('#files-list li[data-file="before.txt"]')

    server.stop()
    page.wait_for_selector('#status[data-status="reconnecting"]')
    page.wait_for_selector("#notice:not([hidden])")
    assert "not reachable" in page.inner_text("#notice")

    server.start()
    page.wait_for_selector('#status[data-status="open"]', timeout=15_000)
    wait_until(lambda: server.subscribers("files") >= 1, "the resubscription")
    server.post("api/events/files", {"file": "after.txt", "event": "add"})
    page.wait_for_selector('#files-list li[data-file="after.txt"][data-event="add"]')
    assert page.is_hidden("#notice")
    assert page.inner_text("#panel-files [data-count]") == "2 events"


def test_unavailable_procedures_and_server_errors(page: Any, launch: Callable[..., Server]) -> None:
    """
    A server without event sources has no search: the search panel says so
    in words. The page's client rejects a call the server answers with an
    error, with the server's code and message.
    """
    server = launch(args=["--sources", ""])
    open_dashboard(page, server)
    page.fill("#search-query", "anything")
    page.click("#search-start")
    state = page.wait_for_selector('#search-state[data-state="unavailable"]')
    assert state.inner_text() == "Not available on this server: it has no search.start procedure."
    error = page.evaluate(
        """async () => {
            try {
                await window.cluso.client.invoke("no.such.procedure", { any: 1 });
                return null;
            } catch (e) {
                return { name: e.name, code: e.code, message: e.message };
            }
        }"""
    )
    assert error == {
        "name": "ClusoError",
        "code": "no_such_procedure",
        "message": "No such procedure: no.such.procedure",
    }


def test_panels_render_published_events(page: Any, launch: Callable[..., Server]) -> None:
    """
    Events however published reach their panels: diagnostics replace a
    file's entries and a cleared report removes them, a validation result
    lists its problems, and AI chunks arriving out of order are shown in
    index order, the stream marked finished at its last chunk.
    """
    server = launch(args=["--sources", ""])
    open_dashboard(page, server)

    def diagnostic(file: str, line: int, message: str) -> dict[str, Any]:
        return {
            "file": file,
            "line": line,
            "column": 1,
            "message": message,
            "severity": "error",
            "source": "pyflakes",
        }

    server.post(
        "api/events/diagnostics",
        {"diagnostics": [diagnostic("a.py", 1, "one"), diagnostic("a.py", 2, "two")]},
    )
    server.post("api/events/diagnostics", {"diagnostics": [diagnostic("b.py", 3, "three")]})
    wait_in_page(page, "document.querySelectorAll('#diagnostics-table tbody tr').length === 3")
    assert page.inner_text("#diagnostics-state") == "3 problems in 2 files."
    server.post("api/events/diagnostics", {"diagnostics": [], "cleared": True, "file": "a.py"})
    wait_in_page(page, "document.querySelectorAll('#diagnostics-table tbody tr').length === 1")
    assert "b.py:3:1" in page.inner_text("#diagnostics-table")

    server.post(
        "api/events/validation",
        {
            "validation": {
                "type": "lint",
                "passed": False,
                "errors": [
                    {"file": "a.py", "line": 1, "column": 8, "message": "unused", "rule": "F401"}
                ],
            }
        },
    )
    result = page.wait_for_selector('.validation[data-type="lint"][data-passed="false"]')
    assert "failed, 1 problem" in result.inner_text()
    assert "F401" in result.inner_text()

    for index, chunk, finished in [(1, "world", False), (0, "Hello, ", False), (2, "!", True)]:
        server.post(
            "api/events/ai-response",
            {"id": "s1", "chunk": chunk, "index": index, "finished": finished},
        )
    answer = page.wait_for_selector('#ai-answers li[data-stream="s1"][data-finished="true"]')
    assert answer.query_selector("pre.answer").inner_text() == "Hello, world!"
    assert page.inner_text("#panel-ai [data-count]") == "3 events"


def test_dashboard_without_credentials_says_how_to_sign_in(
    page: Any, launch: Callable[..., Server]
) -> None:
    """
    Opened without a token, the dashboard loads (it holds no secret) and
    says how to sign in; given a token the server does not accept, it
    forgets that token and says so; the right sign-in link then connects,
    also when it only changes the fragment of the page already open.
    """
    server = launch(args=["--sources", ""])
    page.goto(server.url)
    notice = page.wait_for_selector("#notice:not([hidden])")
    assert notice.inner_text().startswith("Not signed in.")
    assert "#token=" in notice.inner_text()
    assert "cluso-router/token" in notice.inner_text()

    page.goto(server.url + "#token=not-the-token-123")
    wait_in_page(page, "document.getElementById('notice').innerText.includes('refused the token')")
    assert page.evaluate("sessionStorage.getItem('cluso.token')") is None
    assert page.url == server.url

    page.goto(server.url + "#token=" + server.token)
    page.wait_for_selector('#status[data-status="open"]')


def test_backups_card_creates_restores_after_confirming_and_deletes(
    page: Any, launch: Callable[..., Server]
) -> None:
    """
    The Backups card creates a backup with a description; Restore asks in
    the card first (Cancel changes nothing), then brings the file back and
    lists the automatic snapshot of the state before, newest first; Delete
    asks too, then removes the backup from the list.
    """
    server = launch(args=["--sources", ""])
    (server.root / "notes.md").write_text("original\n")
    open_dashboard(page, server)
    page.wait_for_selector("#backup-list li.empty")
    assert page.inner_text("#backup-list").startswith("No backups yet.")

    page.fill("#backup-description", "Before the experiment")
    page.click("#backup-create")
    page.wait_for_selector('#backup-list li.backup[data-automatic="false"]')
    assert page.inner_text("#backup-state") == (
        "Backed up 1 file (9 bytes) as \u201cBefore the experiment\u201d."
    )
    assert page.input_value("#backup-description") == ""
    manual = '#backup-list li.backup[data-automatic="false"]'
    assert "Before the experiment" in page.inner_text(manual)

    (server.root / "notes.md").write_text("experiment\n")
    page.click(f"{manual} button.restore")
    question = page.wait_for_selector('.confirm[data-action="restore"]')
    assert "can be undone" in question.inner_text()
    page.click(".confirm button.confirm-no")
    assert page.query_selector(".confirm") is None
    assert (server.root / "notes.md").read_text() == "experiment\n"

    page.click(f"{manual} button.restore")
    page.click('.confirm[data-action="restore"] button.confirm-yes')
    wait_in_page(page, "document.getElementById('backup-state').textContent.startsWith('Restored')")
    assert "1 file changed" in page.inner_text("#backup-state")
    assert (server.root / "notes.md").read_text() == "original\n"
    wait_in_page(page, "document.querySelectorAll('#backup-list li.backup').length === 2")
    first = page.locator("#backup-list li.backup").first
    assert first.get_attribute("data-automatic") == "true"
    assert "automatic" in first.inner_text()

    page.click('#backup-list li.backup[data-automatic="true"] button.delete')
    page.click('.confirm[data-action="delete"] button.confirm-yes')
    wait_in_page(page, "document.querySelectorAll('#backup-list li.backup').length === 1")
    assert page.inner_text("#backup-state").startswith("Deleted")
    assert page.is_hidden("#backup-progress-row")
    assert page.inner_text("#panel-backup [data-count]") != "0 events"
    listed = server.get("api/backup/list")["data"]["backups"]
    assert [b["description"] for b in listed] == ["Before the experiment"]


def test_cards_say_why_an_action_failed_and_what_to_install(
    page: Any, launch: Callable[..., Server]
) -> None:
    """
    A validator that could not run shows its reason and what to install
    rather than "failed, 0 problems", and the summary counts it as not
    run; a language server that cannot start is named in the diagnostics
    card with its reason.
    """
    server = launch(args=["--sources", "lsp", "--lsp", "python=no-such-language-server-xyz"])
    open_dashboard(page, server)

    server.post(
        "api/events/validation",
        {
            "validation": {
                "tool": "ruff",
                "type": "lint",
                "passed": False,
                "errors": [],
                "error": "ruff is not installed (not found on PATH)",
                "install": "pip install 'cluso-router[python]'",
            }
        },
    )
    card = page.wait_for_selector('.validation[data-type="lint"][data-error="true"]')
    assert card.query_selector("h3").inner_text() == "lint (ruff): could not run"
    assert card.query_selector(".reason").inner_text() == (
        "ruff is not installed (not found on PATH) Install: pip install 'cluso-router[python]'"
    )
    assert "0 problems" not in card.inner_text()
    assert page.inner_text("#validation-state").startswith("1 check could not run at ")

    (server.root / "app.py").write_text("import os\n")
    server.post("api/lsp/touch", {"file": "app.py"})
    why = page.wait_for_selector("#diagnostics-why .reason")
    assert why.inner_text() == (
        "The python language server (no-such-language-server-xyz) failed: "
        "command not found: no-such-language-server-xyz"
    )


def test_the_contracts_are_linked_from_the_dashboard(
    page: Any, launch: Callable[..., Server]
) -> None:
    """
    The dashboard links the OpenAPI and AsyncAPI documents. A tab signed in
    by the #token= link (no cookie) opens them in a new tab, fetched with
    its token, and the dashboard stays; the AsyncAPI one lists this
    server's channels, the OpenAPI one its operations.
    """
    server = launch()
    open_dashboard(page, server)
    assert page.get_attribute("#link-openapi", "href") == "api/openapi.json"
    documents = {}
    for link in ("#link-asyncapi", "#link-openapi"):
        with page.expect_popup() as popup:
            page.click(link)
        shown = popup.value
        shown.wait_for_url("blob:**")
        documents[link] = json.loads(shown.inner_text("body"))
        shown.close()
    assert page.get_attribute("#status", "data-status") == "open"
    assert documents["#link-asyncapi"]["asyncapi"] == "3.0.0"
    assert {"files", "git", "search"} <= set(documents["#link-asyncapi"]["channels"])
    assert "/api/files/read" in documents["#link-openapi"]["paths"]
