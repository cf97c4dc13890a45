"""Real epxd processes for the Python tests, started as the C++ integration
tests start them (tests/harness/daemon_process.cc): a socket in a temp dir,
an ephemeral Peer port on loopback, tcp rails on lo, a shared cluster secret.

The binaries come from EPX_EPXD / EPX_EPXCTL (tools/test.sh sets them to
bazel-bin's), else from the workspace's bazel-bin."""

import json
import os
import secrets
import subprocess
import time
from typing import List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def binary(env_name: str, relative: str) -> str:
    path = os.environ.get(env_name) or os.path.join(REPO, "bazel-bin", relative)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path} is not built: bazel build //{os.path.dirname(relative)}:"
                                f"{os.path.basename(relative)} (or set {env_name})")
    return path


def secret_file(directory: str) -> str:
    path = os.path.join(directory, "cluster.secret")
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path


class Daemon:
    """One epxd; stop() (or the fixture) ends it."""

    def __init__(self, directory: str, name: str) -> None:
        self.name = name
        self.directory = directory
        self.socket = os.path.join(directory, f"{name}.sock")
        self.log_path = os.path.join(directory, f"{name}.log")
        argv = [binary("EPX_EPXD", "daemon/epxd"), "--node-name", name, "--control-socket", self.socket,
                "--peer-listen", "127.0.0.1:0", "--provider", "tcp", "--rail-domains", "lo",
                "--log-level", "info", "--rpc-timeout-ms", "2000", "--peer-secret-file", secret_file(directory)]
        self._log = open(self.log_path, "w")
        self.process: Optional[subprocess.Popen] = subprocess.Popen(argv, stdout=self._log,
                                                                     stderr=subprocess.STDOUT)
        self.peer_address = self._wait_ready()

    def _wait_ready(self) -> str:
        import epx
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"epxd {self.name} exited during start:\n{self.log()}")
            try:
                client = epx.Client(self.socket, name="test probe", rpc_timeout_ms=1000)
                address = client.daemon_info().peer_address
                client.close()
                return address
            except epx.EpxError:
                time.sleep(0.05)
        raise RuntimeError(f"epxd {self.name} did not answer within 20 s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        with open(self.log_path) as f:
            return f.read()

    def status(self) -> dict:
        out = subprocess.run([binary("EPX_EPXCTL", "tools/epxctl"), "--socket", self.socket, "status", "--json"],
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"epxctl status --json exited with {out.returncode}: {out.stdout}{out.stderr}")
        return json.loads(out.stdout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self._log.close()


def start(directory: str, names: List[str]) -> List[Daemon]:
    return [Daemon(directory, n) for n in names]
