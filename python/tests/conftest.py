"""Fixtures: the packages on sys.path, libepx_c.so from the build, real
epxd daemons in a temp dir."""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if not os.environ.get("EPX_TEST_INSTALLED"):  # else: the installed wheel's packages and library
    sys.path.insert(0, os.path.dirname(HERE))  # python/: the epx and deep_ep packages
sys.path.insert(0, HERE)

from daemons import REPO, Daemon  # noqa: E402

if not os.environ.get("EPX_TEST_INSTALLED"):
    os.environ.setdefault("EPX_LIBRARY", os.path.join(REPO, "bazel-bin", "python", "native", "libepx_c.so"))


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(str(tmp_path), "a")
    yield d
    d.stop()


@pytest.fixture
def two_daemons(tmp_path):
    ds = [Daemon(str(tmp_path), "a"), Daemon(str(tmp_path), "b")]
    yield ds
    for d in ds:
        d.stop()


@pytest.fixture
def single_rank_group(tmp_path, daemon, monkeypatch):
    """A world of one (gloo, this process) whose rank talks to `daemon`."""
    import torch.distributed as dist
    monkeypatch.setenv("EPX_SOCKET", daemon.socket)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/rendezvous", rank=0, world_size=1)
    yield dist.group.WORLD
    dist.destroy_process_group()
