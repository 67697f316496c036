"""Start and stop a throwaway JupyterLab server (used by the browser test).

:func:`lab_server` serves one folder on a free localhost port with a known token,
``--no-browser``, root allowed, and every Jupyter/IPython config, data, runtime and
settings folder under a temp dir, so nothing of the user's setup is read or
written. :func:`notebook_copy` writes a notebook of ``notebooks/`` as .ipynb with
parameters overridden (an ``injected-parameters`` cell after the ``parameters``
cell, as papermill does).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ran.pipeline import to_ipynb
from ran.report.notebooks import NOTEBOOK_DIR

# User settings that keep a fresh JupyterLab quiet and predictable: no "Select
# Kernel" dialog on opening a notebook (its preferred kernel starts), every cell
# kept in the DOM (no windowing of off-screen cells), no news or update check (the
# machine has no internet) and no toasts over the notebook.
_QUIET_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "autoStartDefaultKernel": True,
        "windowingMode": "none",
    },
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
}


@dataclass
class LabServer:
    """A running JupyterLab: its base URL, token, served folder and log file."""

    url: str
    token: str
    root_dir: Path
    log: Path
    proc: subprocess.Popen

    def lab_url(self, path: str = "") -> str:
        """URL that opens ``path`` (relative to root_dir) in JupyterLab, token included."""
        return f"{self.url}lab/tree/{path}?token={self.token}"

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notebook_copy(name: str, dst_dir: Path, parameters: dict, src_dir: Path = NOTEBOOK_DIR) -> Path:
    """``src_dir/<name>.py`` as ``dst_dir/<name>.ipynb`` with ``parameters`` injected."""
    import nbformat

    dst = to_ipynb(Path(src_dir) / f"{name}.py", Path(dst_dir) / f"{name}.ipynb")
    nb = nbformat.read(dst, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    if not tagged:
        raise ValueError(f"{name} has no cell tagged 'parameters'")
    source = "# Parameters\n" + "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(tagged[0] + 1, cell)
    nbformat.write(nb, dst)
    return dst


def _isolated_env(home: Path, extra: dict | None) -> dict:
    env = dict(os.environ)
    for var, sub in (
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("IPYTHONDIR", "ipython"),
        ("MPLCONFIGDIR", "matplotlib"),
    ):
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / sub)
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env.pop("JUPYTER_PATH", None)
    env.update(extra or {})
    return env


def _write_settings(settings_dir: Path) -> None:
    for rel, body in _QUIET_SETTINGS.items():
        p = settings_dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(body))


def wait_ready(server: LabServer, timeout: float = 90.0) -> None:
    """Block until the server answers ``/api/status`` with the token, or raise."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"JupyterLab exited with code {server.proc.returncode} before it was ready; "
                f"log {server.log}:\n{server.log_tail()}"
            )
        try:
            req = urllib.request.Request(
                f"{server.url}api/status", headers={"Authorization": f"token {server.token}"}
            )
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise TimeoutError(
        f"JupyterLab did not answer {server.url}api/status within {timeout:.0f} s ({last}); "
        f"log {server.log}:\n{server.log_tail()}"
    )


@contextmanager
def lab_server(
    root_dir: Path, env: dict | None = None, timeout: float = 90.0, log: Path | None = None
) -> Iterator[LabServer]:
    """Serve ``root_dir`` with JupyterLab on a free port; stop it (and its kernels) on exit.

    ``env`` adds variables for the server and so for its kernels (e.g. ``RAN_ROOT``).
    """
    home = Path(tempfile.mkdtemp(prefix="ran-lab-"))
    settings = home / "config" / "lab" / "user-settings"
    _write_settings(settings)
    port, token = free_port(), secrets.token_hex(16)
    # the default log goes with the temp dir on exit: pass ``log`` to keep it
    log = Path(log) if log is not None else home / "jupyterlab.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        "--ServerApp.open_browser=False",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            cmd,
            cwd=root_dir,
            env=_isolated_env(home, env),
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LabServer(f"http://127.0.0.1:{port}/", token, Path(root_dir), log, proc)
    try:
        wait_ready(server, timeout)
        yield server
    finally:
        stop(server)
        shutil.rmtree(home, ignore_errors=True)


def _api(server: LabServer, path: str, method: str = "GET"):
    req = urllib.request.Request(
        f"{server.url}api/{path}",
        method=method,
        headers={"Authorization": f"token {server.token}"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def stop(server: LabServer, timeout: float = 15.0) -> None:
    """Shut its kernels down through the API (they run in sessions of their own), then
    SIGTERM the server, and SIGKILL its process group if it hangs."""
    proc = server.proc
    if proc.poll() is not None:
        return
    try:
        for kernel in _api(server, "kernels"):
            _api(server, f"kernels/{kernel['id']}", "DELETE")
    except (urllib.error.URLError, OSError, ValueError):
        pass  # the server is going down anyway; SIGTERM also shuts kernels down
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # its own session: the server and the kernels it started
        proc.wait(5)
