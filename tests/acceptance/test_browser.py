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
``make test-browser`` installs Chromium and Playwright and runs it with the chat
panel's test (test_browser_agent.py). The shared helpers are tests/browser_helpers.py
and the ``browser_page`` fixture tests/conftest.py. Screenshots and the
JupyterLab log go to build/browser/.
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
    settled,
    wait,
)

pytestmark = pytest.mark.browser

REDRAW_TIMEOUT_S = 120


def test_sr_slider_redraws_live_figure(tmp_path, browser_page):
    page = browser_page
    params = {"profile": "smoke", "interactive": True}
    with notebook_session(page, tmp_path, "01_esn_dynamics", params) as steps:
        idle = page.locator(IDLE)
        steps.now = "wait for the interact widget and its first figure"
        interact = f"{NOTEBOOK} .widget-interact"
        slider = page.locator(f"{interact} .widget-hslider").filter(
            has=page.locator(".widget-label", has_text=re.compile(r"^sr$"))
        )
        slider.wait_for(timeout=RUN_ALL_TIMEOUT_S * 1000)
        before = wait(
            lambda: images(page, interact),
            REDRAW_TIMEOUT_S,
            "the live figure under the sliders",
            page,
        )
        before_png = [png(s) for s in before]
        steps.now = "wait for the last cell (save) to finish"
        saved = page.get_by_text(re.compile(r"saved build/smoke/data/results/01_"))
        saved.wait_for(timeout=RUN_ALL_TIMEOUT_S * 1000)
        idle.wait_for(timeout=RUN_ALL_TIMEOUT_S * 1000)
        assert not errors(page), errors(page)
        assert images(page, interact) == before, "the figure changed before the slider moved"
        readout = slider.locator(".widget-readout")
        sr_before = float(readout.inner_text())

        steps.now = "move the sr slider (keyboard arrows on its focused handle)"
        handle = slider.locator(".noUi-handle")
        handle.focus()
        for _ in range(4):  # 4 slider steps up (0.05 each in the notebook)
            page.keyboard.press("ArrowRight")
        wait(
            lambda: float(readout.inner_text()) > sr_before,
            10,
            f"the sr readout to rise above {sr_before:.2f} after 4 ArrowRight presses",
            page,
        )
        sr_after = float(readout.inner_text())
        t0 = time.monotonic()

        steps.now = "wait for the redraw"

        def redrawn():
            srcs = images(page, interact)
            return srcs if srcs and srcs != before else None

        wait(redrawn, REDRAW_TIMEOUT_S, "the figure to redraw", page)
        # continuous_update queues one redraw per arrow press: wait until they settle
        after = settled(page, interact, REDRAW_TIMEOUT_S)
        redraw_s = time.monotonic() - t0
        assert not errors(page, interact), errors(page, interact)
        after_png = [png(s) for s in after]
        assert len(after_png) == len(before_png), (len(before_png), len(after_png))
        assert all(a != b for a, b in zip(after_png, before_png, strict=True)), (
            "some output image did not change after the slider moved"
        )
        loaded = images_loaded(page, interact)
        assert loaded and all(loaded), f"redrawn image did not decode in the browser: {loaded}"
        page.locator(interact).screenshot(path=str(ARTIFACTS / "after_slider.png"))
        print(
            f"sr {sr_before:.2f} -> {sr_after:.2f}: figure redrawn and settled in "
            f"{redraw_s:.1f} s, {len(after)} image(s)"
        )
