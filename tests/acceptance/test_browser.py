"""The sliders of notebook 01 in a real JupyterLab, driven by headless Chromium.

A stated use: users open notebooks/01_esn_dynamics.py in JupyterLab with
``interactive = True`` and move the ipywidgets sliders over sr and reservoir size;
the live figure must redraw. This test serves a temp .ipynb copy of the notebook
(``profile = "smoke"``, ``interactive = True`` injected after its parameters cell)
with a throwaway JupyterLab (ran.lab), opens it in Debian's Chromium through
Playwright, runs all cells from the Run menu, waits for the widget, moves the sr
slider with the keyboard and checks that the figure below it is redrawn: the
output image's bytes change to another valid PNG, with no error in the output.

Marked ``browser``: plain ``pytest`` deselects it (pyproject addopts);
``make test-browser`` installs Chromium and Playwright and runs it. Screenshots
and the JupyterLab log go to build/browser/.
"""

from __future__ import annotations

import base64
import re
import shutil
import time
from pathlib import Path

import pytest

from ran import lab
from ran.util.results import REPO_ROOT

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "build" / "browser"
NOTEBOOK = "01_esn_dynamics"
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
RUN_ALL_TIMEOUT_S = 300  # kernel start + the smoke notebook (~45 s on 2 busy cores)
REDRAW_TIMEOUT_S = 120
PNG = b"\x89PNG\r\n\x1a\n"


def _images(page, scope: str) -> list[str]:
    """The src of every image in the output areas under ``scope``, in DOM order."""
    return page.eval_on_selector_all(
        f"{scope} .jp-OutputArea-output img", "els => els.map(e => e.getAttribute('src') || '')"
    )


def _errors(page, scope: str) -> list[str]:
    """Text of error/stderr outputs under ``scope`` that hold a traceback or an Error."""
    texts = page.eval_on_selector_all(
        f"{scope} .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
        "els => els.map(e => e.innerText)",
    )
    return [t for t in texts if "Traceback" in t or "Error" in t]


def _png(src: str) -> bytes:
    assert src.startswith("data:image/png;base64,"), (
        f"output image is not an inline PNG: {src[:80]!r}"
    )
    data = base64.b64decode(src.split(",", 1)[1])
    assert data.startswith(PNG) and len(data) > 5_000, (
        f"output image is not a real PNG ({len(data)} B)"
    )
    return data


def _wait(predicate, timeout: float, what: str, page=None, interval: float = 0.25):
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


def _accept_kernel_dialog(page, wait_ms: int = 3000) -> None:
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


def _run_all_cells(page, attempts: int = 3, start_s: float = 20.0) -> None:
    """Run > Run All Cells from the menu bar, until the first code cell is scheduled.

    JupyterLab marks a cell ``[*]`` as soon as it sends it to the kernel; a cell still
    at ``[ ]`` means the request was dropped (the kernel was not attached yet), so
    the menu command is given again.
    """
    prompts = ".jp-NotebookPanel .jp-CodeCell .jp-InputPrompt"
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


def _settled(page, scope: str, idle, timeout: float, quiet_s: float = 3.0) -> list[str]:
    """The images under ``scope`` once the kernel is idle and they stayed the same ``quiet_s``."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        srcs = _images(page, scope)
        if srcs != last:
            last, since = srcs, time.monotonic()
        elif idle.count() and time.monotonic() - since >= quiet_s:
            return srcs
        page.wait_for_timeout(250)
    raise AssertionError(f"the figure did not settle within {timeout:.0f} s")


@pytest.fixture
def browser_page(tmp_path, request):
    """A fresh headless Chromium page (own profile dir)."""
    # a later -m replaces addopts' "not browser" (e.g. `pytest -m "not slow"`): run only
    # when asked for by name
    if "browser" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("browser test: run `make test-browser` (or `pytest -m browser`)")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test-browser` installs Debian's chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed in .venv: run `make test-browser`")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
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


def test_sr_slider_redraws_live_figure(tmp_path, browser_page):
    page = browser_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    served = tmp_path / "served"
    lab.notebook_copy(NOTEBOOK, served, {"profile": "smoke", "interactive": True})
    log = ARTIFACTS / "jupyterlab.log"
    # RAN_ROOT: the smoke run's figures and results go to the temp dir, not build/smoke.
    with lab.lab_server(served, env={"RAN_ROOT": str(tmp_path / "root")}, log=log) as server:
        step = "open the notebook"
        try:
            page.goto(server.lab_url(f"{NOTEBOOK}.ipynb"))
            page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(timeout=90_000)
            step = "wait for the kernel to be connected and idle"
            _accept_kernel_dialog(page)
            idle = page.locator(
                ".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']"
            )
            # the toolbar indicator reads 'idle' before a kernel is attached; the status
            # bar names the kernel and its state only once it is connected
            page.locator(".jp-StatusBar-Widget").get_by_text(
                re.compile(r"\(ipykernel\) \| Idle")
            ).wait_for(timeout=90_000)
            idle.wait_for(timeout=90_000)

            step = "Run > Run All Cells"
            _run_all_cells(page)

            step = "wait for the interact widget and its first figure"
            interact = ".jp-NotebookPanel .widget-interact"
            slider = page.locator(f"{interact} .widget-hslider").filter(
                has=page.locator(".widget-label", has_text=re.compile(r"^sr$"))
            )
            slider.wait_for(timeout=RUN_ALL_TIMEOUT_S * 1000)
            before = _wait(
                lambda: _images(page, interact),
                REDRAW_TIMEOUT_S,
                "the live figure under the sliders",
                page,
            )
            before_png = [_png(s) for s in before]
            step = "wait for the last cell (save) to finish"
            saved = page.get_by_text(re.compile(r"saved build/smoke/data/results/01_"))
            saved.wait_for(timeout=RUN_ALL_TIMEOUT_S * 1000)
            idle.wait_for(timeout=RUN_ALL_TIMEOUT_S * 1000)
            assert not _errors(page, ".jp-NotebookPanel"), _errors(page, ".jp-NotebookPanel")
            assert _images(page, interact) == before, "the figure changed before the slider moved"
            readout = slider.locator(".widget-readout")
            sr_before = float(readout.inner_text())

            step = "move the sr slider (keyboard arrows on its focused handle)"
            handle = slider.locator(".noUi-handle")
            handle.focus()
            for _ in range(4):  # 4 slider steps up (0.05 each in the notebook)
                page.keyboard.press("ArrowRight")
            _wait(
                lambda: float(readout.inner_text()) > sr_before,
                10,
                f"the sr readout to rise above {sr_before:.2f} after 4 ArrowRight presses",
                page,
            )
            sr_after = float(readout.inner_text())
            t0 = time.monotonic()

            step = "wait for the redraw"

            def redrawn():
                srcs = _images(page, interact)
                return srcs if srcs and srcs != before else None

            _wait(redrawn, REDRAW_TIMEOUT_S, "the figure to redraw", page)
            # continuous_update queues one redraw per arrow press: wait until they settle
            after = _settled(page, interact, idle, REDRAW_TIMEOUT_S)
            redraw_s = time.monotonic() - t0
            assert not _errors(page, interact), _errors(page, interact)
            after_png = [_png(s) for s in after]
            assert len(after_png) == len(before_png), (len(before_png), len(after_png))
            assert all(a != b for a, b in zip(after_png, before_png, strict=True)), (
                "some output image did not change after the slider moved"
            )
            loaded = page.eval_on_selector_all(
                f"{interact} .jp-OutputArea-output img",
                "els => els.map(e => e.complete && e.naturalWidth > 0)",
            )
            assert loaded and all(loaded), f"redrawn image did not decode in the browser: {loaded}"
            page.locator(interact).screenshot(path=str(ARTIFACTS / "after_slider.png"))
            print(
                f"sr {sr_before:.2f} -> {sr_after:.2f}: figure redrawn and settled in "
                f"{redraw_s:.1f} s, {len(after)} image(s)"
            )
        except Exception as exc:
            shot = ARTIFACTS / f"failure-{time.strftime('%Y%m%d-%H%M%S')}.png"
            try:
                page.screenshot(path=str(shot), full_page=True)
            except Exception:  # the page itself may be gone
                shot = None
            if log.exists():
                shutil.copy(log, ARTIFACTS / "jupyterlab-failure.log")
            raise AssertionError(
                f"browser test failed at step '{step}': {exc}\n"
                f"screenshot: {shot}; JupyterLab log: {log}"
            ) from exc
