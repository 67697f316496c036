"""Shared helpers of the browser tests (tests/acceptance/test_browser*.py).

:func:`notebook_session` serves a temp .ipynb copy of a notebook of ``notebooks/``
(parameters injected after its parameters cell) with a throwaway JupyterLab
(ran.lab), opens it in the Playwright page, waits for its kernel and runs all cells
from the Run menu; on a failure it saves a full-page screenshot and the JupyterLab
log to build/browser/ and names the step that failed. The rest reads the page:
output images as PNG bytes, error outputs, polling with a deadline. The
``browser_page`` fixture (tests/conftest.py) is a :func:`chromium_page`.
"""

from __future__ import annotations

import base64
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ran import lab
from ran.util.results import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "build" / "browser"
# Flags that work as root in this container; without the background-networking
# ones Chromium keeps trying to reach Google services on a closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RUN_ALL_TIMEOUT_S = 300  # kernel start + a smoke notebook (~45 s on 2 busy cores)
PNG = b"\x89PNG\r\n\x1a\n"
NOTEBOOK = ".jp-NotebookPanel"
# the toolbar's kernel indicator, once the kernel has nothing left to execute
IDLE = f"{NOTEBOOK} .jp-Notebook-ExecutionIndicator[data-status='idle']"


def images(page, scope: str) -> list[str]:
    """The src of every image in the output areas under ``scope``, in DOM order."""
    return page.eval_on_selector_all(
        f"{scope} .jp-OutputArea-output img", "els => els.map(e => e.getAttribute('src') || '')"
    )


def images_loaded(page, scope: str) -> list[bool]:
    """Whether each output image under ``scope`` decoded in the browser."""
    return page.eval_on_selector_all(
        f"{scope} .jp-OutputArea-output img",
        "els => els.map(e => e.complete && e.naturalWidth > 0)",
    )


def errors(page, scope: str = NOTEBOOK) -> list[str]:
    """Text of error and stderr outputs under ``scope`` that hold a Traceback or an Error."""
    texts = page.eval_on_selector_all(
        f"{scope} .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
        "els => els.map(e => e.innerText)",
    )
    return [t for t in texts if "Traceback" in t or "Error" in t]


def png(src: str, min_bytes: int = 5_000) -> bytes:
    """The bytes of an inline PNG image src; fails unless it is a real PNG."""
    assert src.startswith("data:image/png;base64,"), (
        f"output image is not an inline PNG: {src[:80]!r}"
    )
    data = base64.b64decode(src.split(",", 1)[1])
    assert data.startswith(PNG) and len(data) > min_bytes, (
        f"output image is not a real PNG ({len(data)} B)"
    )
    return data


def wait(predicate, timeout: float, what: str, page=None, interval: float = 0.25):
    """Poll ``predicate`` until it returns a truthy value; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if page is not None:
            page.wait_for_timeout(interval * 1000)
        else:
            time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def settled(page, scope: str, timeout: float, quiet_s: float = 3.0) -> list[str]:
    """The images under ``scope`` once the kernel is idle and they stayed the same ``quiet_s``."""
    idle = page.locator(IDLE)
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        srcs = images(page, scope)
        if srcs != last:
            last, since = srcs, time.monotonic()
        elif idle.count() and time.monotonic() - since >= quiet_s:
            return srcs
        page.wait_for_timeout(250)
    raise AssertionError(f"the figure did not settle within {timeout:.0f} s")


def accept_kernel_dialog(page, wait_ms: int = 3000) -> None:
    """Click "Select" if JupyterLab asks which kernel to start (ran.lab's settings make
    it start the notebook's kernel directly, so this is only a fallback)."""
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    try:
        dialog.wait_for(timeout=wait_ms)
    except Exception:  # playwright's TimeoutError: no dialog, as expected
        return
    print("JupyterLab asked for a kernel: accepted its choice")
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    dialog.wait_for(state="detached")


def wait_for_kernel(page, timeout_ms: int = 90_000) -> None:
    """Until the notebook's kernel is connected and idle."""
    accept_kernel_dialog(page)
    # the toolbar indicator reads 'idle' before a kernel is attached; the status
    # bar names the kernel and its state only once it is connected
    page.locator(".jp-StatusBar-Widget").get_by_text(re.compile(r"\(ipykernel\) \| Idle")).wait_for(
        timeout=timeout_ms
    )
    page.locator(IDLE).wait_for(timeout=timeout_ms)


def run_all_cells(page, attempts: int = 3, start_s: float = 20.0) -> None:
    """Run > Run All Cells from the menu bar, until the first code cell is scheduled.

    JupyterLab marks a cell ``[*]`` as soon as it sends it to the kernel; a cell still
    at ``[ ]`` means the request was dropped (the kernel was not attached yet), so
    the menu command is given again.
    """
    prompts = f"{NOTEBOOK} .jp-CodeCell .jp-InputPrompt"
    scheduled = re.compile(r"\[(\*|\d+)\]")
    for attempt in range(1, attempts + 1):
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        deadline = time.monotonic() + start_s
        while time.monotonic() < deadline:
            texts = page.eval_on_selector_all(prompts, "els => els.map(e => e.textContent)")
            if any(scheduled.search(t or "") for t in texts):
                return
            page.wait_for_timeout(250)
        print(f"Run All Cells attempt {attempt}: no cell was scheduled in {start_s:.0f} s")
        page.screenshot(path=str(ARTIFACTS / f"run-all-attempt-{attempt}.png"))
    raise AssertionError(f"Run > Run All Cells scheduled no cell in {attempts} attempts")


@contextmanager
def chromium_page(profile_dir: Path):
    """A fresh page of headless Debian Chromium (own profile dir) through Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile_dir),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            context.close()


class Steps:
    """The step a browser test is at, named in its failure message."""

    def __init__(self, now: str = "start"):
        self.now = now


@contextmanager
def notebook_session(page, tmp_path: Path, notebook: str, parameters: dict) -> Iterator[Steps]:
    """Serve ``notebooks/<notebook>.py`` with ``parameters``, open it, run all cells.

    Yields a :class:`Steps` (set ``steps.now`` as the test goes); on any failure
    inside the block it saves ``build/browser/failure-<notebook>-<time>.png`` and the
    JupyterLab log, and raises an AssertionError naming the step. ``RAN_ROOT`` is a
    temp dir: the smoke run's figures and results do not touch build/smoke.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    served = tmp_path / "served"
    lab.notebook_copy(notebook, served, parameters)
    log = ARTIFACTS / f"jupyterlab-{notebook}.log"
    steps = Steps("start JupyterLab")
    with lab.lab_server(served, env={"RAN_ROOT": str(tmp_path / "root")}, log=log) as server:
        try:
            steps.now = "open the notebook"
            page.goto(server.lab_url(f"{notebook}.ipynb"))
            page.locator(f"{NOTEBOOK} .jp-Notebook .jp-Cell").first.wait_for(timeout=90_000)
            steps.now = "wait for the kernel to be connected and idle"
            wait_for_kernel(page)
            steps.now = "Run > Run All Cells"
            run_all_cells(page)
            yield steps
        except Exception as exc:
            shot = ARTIFACTS / f"failure-{notebook}-{time.strftime('%Y%m%d-%H%M%S')}.png"
            try:
                page.screenshot(path=str(shot), full_page=True)
            except Exception:  # the page itself may be gone
                shot = None
            if log.exists():
                shutil.copy(log, ARTIFACTS / f"jupyterlab-{notebook}-failure.log")
            raise AssertionError(
                f"browser test failed at step '{steps.now}': {exc}\n"
                f"screenshot: {shot}; JupyterLab log: {log}"
            ) from exc
