"""tools/build-wheel.sh builds a wheel that pip installs offline into a
fresh environment, where `import deep_ep` finds the bundled library (and its
bundled dependencies, not the system's) and talks to a real epxd."""

import os
import subprocess
import sys

from daemons import REPO

CHECK = """
import sys, tempfile
sys.path.append(sys.argv[1])  # the tests' daemon helper, after site-packages
import epx, deep_ep
from daemons import Daemon
assert "site-packages" in epx.__file__, epx.__file__
d = Daemon(tempfile.mkdtemp(), "a")
try:
    job = epx.Client(d.socket).join("wheel-job", 1, 0, timeout_ms=5000)
    job.barrier(5000)
    job.leave()
finally:
    d.stop()
maps = open("/proc/self/maps").read()
grpc = {line.split()[-1] for line in maps.splitlines() if "libgrpc.so" in line}
assert grpc and all("site-packages/epx/lib" in p for p in grpc), grpc
print("wheel ok", deep_ep.topk_idx_t)
"""


def test_wheel_installs_offline_and_runs(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run([os.path.join(REPO, "tools", "build-wheel.sh"), str(dist)], capture_output=True, text=True,
                           timeout=300, env=dict(os.environ, PYTHON=sys.executable))
    assert build.returncode == 0, build.stdout + build.stderr
    wheels = list(dist.glob("epx-*-py3-none-linux_x86_64.whl"))
    assert len(wheels) == 1, list(dist.iterdir())
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "--no-index", "--no-deps", str(wheels[0])],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("EPX_LIBRARY", "PYTHONPATH")}
    env["EPX_EPXD"] = os.environ.get("EPX_EPXD") or os.path.join(REPO, "bazel-bin", "daemon", "epxd")
    run = subprocess.run([python, "-c", CHECK, os.path.dirname(os.path.abspath(__file__))], capture_output=True,
                         text=True, timeout=120, cwd=str(tmp_path), env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "wheel ok torch.int64" in run.stdout
