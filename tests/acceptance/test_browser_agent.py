"""Notebook 07's chat panel in a real JupyterLab, driven by headless Chromium.

A stated use: users open notebooks/07_agent.py in JupyterLab with
``interactive = True``, type messages into the chat panel and watch r(t) move in
the fixed PCA plane, on prompted passes and on the idle ticks of the scheduler's
timer. This test serves a temp .ipynb copy of the notebook (``profile = "smoke"``:
the tiny random model, so replies are gibberish; ``interactive = True``) with a
throwaway JupyterLab, runs all cells from the Run menu, waits for the panel, checks
that the state plot moves on idle ticks alone, queues ``/idle 20`` (the
conversation box overflows: its last line must stay in view), then sends one
message with Enter and one with the Send button and checks, for each, that the
conversation shows the message and then the pass's entry (an ``agent>`` reply or a
silent line) in view, that the status line counts one more text pass, that the
state plot was redrawn to another valid PNG, and that no output holds a Traceback
or an Error.

Marked ``browser``; run by ``make test-browser`` with the slider test
(test_browser.py). Screenshots go to build/browser/.
"""

from __future__ import annotations

import re
import time

import pytest
from browser_helpers import (
    ARTIFACTS,
    IDLE,
    NOTEBOOK,
    RUN_ALL_TIMEOUT_S,
    errors,
    images,
    images_loaded,
    notebook_session,
    png,
    wait,
)

pytestmark = pytest.mark.browser

PANEL = f"{NOTEBOOK} .ran-chat-panel"
PLOT = f"{PANEL} .ran-chat-plot"
PASS_TIMEOUT_S = 60  # one pass of the tiny model, behind at most one idle tick
IDLE_EVERY_S = 2.0  # the notebook's SchedulerConfig(idle_every=2.0)
# the panel's lines for a text pass: a reply, or the gate's silence
PASS_LINE = re.compile(r"^(agent> .*|· pass \d+: silent \(p = [\d.]+\))$")
STATUS = re.compile(r"pass (\d+) \| (\d+) idle ticks \| (\d+) silent \| (\d+) emitted")


def _log_lines(page) -> list[str]:
    text = page.locator(f"{PANEL} .ran-chat-log").inner_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def _status(page) -> dict:
    text = page.locator(f"{PANEL} .ran-chat-status").inner_text()
    m = STATUS.search(text)
    assert m, f"the status line does not read as counters: {text!r}"
    return dict(zip(("passes", "idle", "silent", "emitted"), map(int, m.groups()), strict=True))


def _log_end_visible(page) -> dict:
    """Whether the log box overflows, and whether the end of its text is in view."""
    return page.eval_on_selector(
        f"{PANEL} .ran-chat-log .ran-chat-scroll",
        """el => {
            const pre = el.querySelector('pre');
            const box = el.getBoundingClientRect();
            const end = pre ? pre.getBoundingClientRect().bottom : box.top;
            return {overflows: el.scrollHeight > el.clientHeight + 1,
                    end_visible: end <= box.bottom + 1 && end >= box.top};
        }""",
    )


def _plot_png(page) -> bytes | None:
    srcs = images(page, PLOT)
    assert len(srcs) <= 1, f"the state plot holds {len(srcs)} images, expected one"
    return png(srcs[0], min_bytes=2_000) if srcs else None


def _plot_moves(page, before: bytes | None, what: str, timeout: float) -> bytes:
    """The state plot's PNG once it differs from ``before``."""

    def moved():
        now = _plot_png(page)
        return now if now is not None and now != before else None

    return wait(moved, timeout, what, page)


def _send(page, steps, message: str, how: str) -> float:
    """Send ``message`` by ``how`` ('enter' or 'click'); check its entry, counters and plot.

    Returns the seconds from sending to the redrawn plot.
    """
    steps.now = f"send {message!r} ({how})"
    box = page.locator(f"{PANEL} .ran-chat-text input")
    box.fill(message)
    before_status, before_plot = _status(page), _plot_png(page)
    t0 = time.monotonic()
    if how == "enter":
        box.press("Enter")
    else:
        page.locator(f"{PANEL} .ran-chat-send").click()
    you = f"you> {message}"

    steps.now = f"wait for the entry of the pass for {message!r} ({how})"

    def answered():
        lines = _log_lines(page)
        if you not in lines:
            return None
        after = lines[lines.index(you) + 1 :]
        return next((line for line in after if PASS_LINE.match(line)), None)

    entry = wait(answered, PASS_TIMEOUT_S, f"an agent> or silent line after {you!r}", page)
    lines = _log_lines(page)  # on a failure the log says what came in between
    assert lines.count(you) == 1, f"{you!r} was sent more than once: {lines[-12:]}"
    wait(lambda: box.input_value() == "", 10, "the text box to be cleared", page)
    steps.now = f"wait for the plot to show the pass for {message!r} ({how})"
    # the panel redraws right after it prints the pass's line; idle ticks go on meanwhile
    after_plot = _plot_moves(page, before_plot, "the state plot to redraw after the pass", 30)
    elapsed = time.monotonic() - t0
    status = _status(page)
    text_passes = status["silent"] + status["emitted"]
    assert text_passes == before_status["silent"] + before_status["emitted"] + 1, (
        before_status,
        status,
    )
    assert status["passes"] > before_status["passes"], (before_status, status)
    assert after_plot != before_plot
    assert all(images_loaded(page, PLOT)), "the redrawn plot did not decode in the browser"
    assert not errors(page), errors(page)
    view = _log_end_visible(page)
    assert view["end_visible"], f"the reply is out of view in the log box: {view}"
    print(f"{how}: {entry!r}, plot redrawn {elapsed:.1f} s after sending; {status}")
    return elapsed


def test_chat_panel_replies_and_the_state_plot_moves(tmp_path, browser_page):
    page = browser_page
    params = {"profile": "smoke", "interactive": True}
    t_start = time.monotonic()
    with notebook_session(page, tmp_path, "07_agent", params) as steps:
        steps.now = "wait for the chat panel"
        page.locator(f"{PANEL} .ran-chat-text input").wait_for(timeout=RUN_ALL_TIMEOUT_S * 1000)
        steps.now = "wait for the last cell (save) to finish"
        saved = page.get_by_text(re.compile(r"saved build/smoke/data/results/07_agent"))
        saved.wait_for(timeout=RUN_ALL_TIMEOUT_S * 1000)
        page.locator(IDLE).wait_for(timeout=RUN_ALL_TIMEOUT_S * 1000)
        print(f"all cells ran in {time.monotonic() - t_start:.0f} s")
        assert not errors(page), errors(page)

        steps.now = "the state plot moves on idle ticks alone"
        first = _plot_moves(page, None, "the state plot", 30)
        idle_before = _status(page)["idle"]
        _plot_moves(page, first, "the state plot to move on an idle tick", 10 * IDLE_EVERY_S)
        wait(lambda: _status(page)["idle"] > idle_before, 10, "the idle-tick counter", page)
        assert any(line.endswith(": idle tick") for line in _log_lines(page)), _log_lines(page)
        page.locator(PANEL).screenshot(path=str(ARTIFACTS / "agent_idle.png"))

        steps.now = "queue 20 idle ticks (/idle 20): the log overflows, its end stays in view"
        n_idle = _status(page)["idle"]
        box = page.locator(f"{PANEL} .ran-chat-text input")
        box.fill("/idle 20")
        box.press("Enter")
        wait(lambda: _status(page)["idle"] >= n_idle + 20, PASS_TIMEOUT_S, "20 idle ticks", page)
        lines = _log_lines(page)
        assert (
            sum(line.endswith(": idle tick") for line in lines[lines.index("you> /idle 20") :])
            >= 20
        )
        view = _log_end_visible(page)
        assert view["overflows"] and view["end_visible"], f"the log's last lines are hidden: {view}"

        _send(page, steps, "the castle is by the lake", "enter")
        page.locator(PANEL).screenshot(path=str(ARTIFACTS / "agent_after_enter.png"))
        _send(page, steps, "where is the castle?", "click")
        page.locator(PANEL).screenshot(path=str(ARTIFACTS / "agent_after_click.png"))

        steps.now = "the panel's log holds no error line"
        bad = [line for line in _log_lines(page) if line.startswith("!")]
        assert not bad, f"the panel reported errors: {bad}"
        assert not errors(page), errors(page)
