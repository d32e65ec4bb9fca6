"""A real ComfyUI server for the tests: headless, on 127.0.0.1, with this pack installed.

It runs on the CPU (`--cpu`) unless DRUM_COMFY_ARGS gives ComfyUI's device and memory flags
instead (bench/gpu_check.sh: "" for the default mode on a GPU, "--lowvram", "--highvram").

    with ComfyServer(base_directory, extra_model_paths) as server:
        server.object_info()            # GET /object_info
        server.run(graph)               # POST /prompt, poll /history/<id> -> HistoryEntry

The base directory holds models/, custom_nodes/ (the repository linked as ComfyUI-DrUM),
input/, output/, user/, temp/; the server log is written next to them. Only the process
started here is stopped, by its pid.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .comfy_env import ROOT, STUBS, comfy_dir

PACK_NAME = "ComfyUI-DrUM"
STARTUP_SECONDS = 300
DEFAULT_DEVICE_ARGS = "--cpu"
PROMPT_SECONDS = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class HistoryEntry:
    """The outcome of one prompt: status, node error (if any) and the saved images."""

    status: str
    messages: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)

    @property
    def error(self) -> dict | None:
        """The execution_error message data (node_id, node_type, exception_message, ...)."""
        return next((data for kind, data in self.messages if kind == "execution_error"), None)

    def images(self, output_dir: Path) -> list[Path]:
        return [
            output_dir / image.get("subfolder", "") / image["filename"]
            for node in self.outputs.values()
            for image in node.get("images", [])
            if image.get("type") == "output"
        ]


class PromptRejected(Exception):
    """POST /prompt answered 400: the graph failed validation (node_errors name the nodes)."""

    def __init__(self, body: dict):
        super().__init__(json.dumps(body)[:3000])
        self.body = body


class ComfyServer:
    def __init__(self, base: Path, extra_model_paths: Path | None = None, pack: Path = ROOT):
        """`pack`: the folder linked as custom_nodes/ComfyUI-DrUM (the repository; or an unpacked Registry archive)."""
        self.base = base
        self.pack = pack
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        self.extra_model_paths = extra_model_paths
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ComfyServer:
        for folder in ("custom_nodes", "input", "output", "user", "temp", "models"):
            (self.base / folder).mkdir(parents=True, exist_ok=True)
        link = self.base / "custom_nodes" / PACK_NAME
        if not link.exists():
            link.symlink_to(self.pack, target_is_directory=True)
        device_args = shlex.split(os.environ.get("DRUM_COMFY_ARGS", DEFAULT_DEVICE_ARGS))
        command = [sys.executable, "main.py", *device_args, "--listen", "127.0.0.1", "--port", str(self.port)]
        command += ["--base-directory", str(self.base), "--database-url", "sqlite:///:memory:", "--disable-auto-launch"]
        if self.extra_model_paths is not None:
            command += ["--extra-model-paths-config", str(self.extra_model_paths)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(STUBS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=comfy_dir(), stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"ComfyUI exited with {self.process.returncode} during start-up; log: {self.log_path}\n{self.log_tail()}"
                )
            try:
                self.get("/system_stats")
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"ComfyUI did not answer within {STARTUP_SECONDS}s; log: {self.log_path}") from None
                time.sleep(0.5)

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def log_tail(self, characters: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:]

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # ------------------------------------------------------------------ HTTP
    def get(self, path: str, timeout: float = 60):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.loads(response.read().decode() or "null")

    def post(self, path: str, data: dict, timeout: float = 60):
        request = urllib.request.Request(self.url + path, data=json.dumps(data).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode() or "null")

    def object_info(self) -> dict:
        return self.get("/object_info")

    def run(self, graph: dict) -> HistoryEntry:
        """Queue an API-format graph and wait for its history entry.

        PromptRejected when any node fails validation, also when ComfyUI still runs the
        outputs that do not depend on it (it answers 200 with node_errors then).
        """
        try:
            answer = self.post("/prompt", {"prompt": graph, "client_id": str(uuid.uuid4())})
        except urllib.error.HTTPError as error:
            if error.code == 400:
                raise PromptRejected(json.loads(error.read().decode())) from None
            raise
        if answer.get("node_errors"):
            raise PromptRejected(answer)
        prompt_id = answer["prompt_id"]
        deadline = time.monotonic() + PROMPT_SECONDS
        while True:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history:
                entry = history[prompt_id]
                status = entry.get("status", {})
                return HistoryEntry(status.get("status_str", ""), status.get("messages", []), entry.get("outputs", {}))
            if not self.alive():
                raise RuntimeError(f"ComfyUI died while running a prompt; log: {self.log_path}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} did not finish within {PROMPT_SECONDS}s; log: {self.log_path}")
            time.sleep(0.2)
