"""Status codes of libepx_c become EpxError subclasses carrying the SDK's
or the daemon's message; bad pointers give a status, never a crash."""

import ctypes
import os
import subprocess
import sys

import pytest

import epx
from epx import _native
from epx.errors import error_from_status


def test_each_code_maps_to_its_class():
    assert isinstance(error_from_status(14, "x"), epx.EpxUnavailableError)
    assert isinstance(error_from_status(4, "x"), epx.EpxTimeoutError)
    assert isinstance(error_from_status(4, "x"), TimeoutError)
    assert isinstance(error_from_status(3, "x"), epx.EpxInvalidArgumentError)
    assert isinstance(error_from_status(3, "x"), ValueError)
    assert isinstance(error_from_status(10, "x"), epx.EpxRankLostError)
    assert isinstance(error_from_status(13, "x"), epx.EpxInternalError)
    e = error_from_status(9, "FAILED_PRECONDITION: why")
    assert isinstance(e, epx.EpxFailedPreconditionError) and e.code == "FAILED_PRECONDITION"
    assert str(e) == "FAILED_PRECONDITION: why"


def test_no_daemon_names_the_socket(tmp_path):
    socket = str(tmp_path / "nobody-listens.sock")
    with pytest.raises(epx.EpxUnavailableError) as info:
        epx.Client(socket, rpc_timeout_ms=1000)
    assert socket in str(info.value)
    assert info.value.code == "UNAVAILABLE"


def test_default_socket_is_the_daemons_unless_epx_socket_is_set(monkeypatch):
    monkeypatch.delenv("EPX_SOCKET", raising=False)
    assert epx.default_socket() == "/run/epx/epxd.sock"
    monkeypatch.setenv("EPX_SOCKET", "/tmp/elsewhere.sock")
    assert epx.default_socket() == "/tmp/elsewhere.sock"


def test_bad_rank_is_an_invalid_argument_naming_it(daemon):
    client = epx.Client(daemon.socket)
    with pytest.raises(epx.EpxInvalidArgumentError) as info:
        client.join("bad-rank", world_size=2, rank=5, timeout_ms=2000)
    assert "rank 5 out of range" in str(info.value)


def test_malformed_gpu_address_is_an_invalid_argument_naming_the_field(daemon):
    client = epx.Client(daemon.socket)
    with pytest.raises(epx.EpxInvalidArgumentError) as info:
        client.join("bad-gpu", world_size=1, rank=0, timeout_ms=2000, gpu_pci_address="../../sys")
    assert "gpu_pci_address" in str(info.value)
    job = client.join("good-gpu", world_size=1, rank=0, timeout_ms=2000, gpu_pci_address="0000:19:00.0")
    assert job.rank == 0


def test_gpu_pci_address_without_such_a_device_is_an_error():
    # No process has CUDA device 4096; without a GPU there is none at all.
    with pytest.raises(epx.EpxError):
        epx.gpu_pci_address(4096)


def test_join_timeout_names_the_missing_rank(daemon):
    client = epx.Client(daemon.socket)
    with pytest.raises(epx.EpxTimeoutError) as info:
        client.join("lonely", world_size=2, rank=0, timeout_ms=500)
    assert "missing ranks: 1" in str(info.value) and info.value.code == "DEADLINE_EXCEEDED"


def test_daemon_info_reports_node_and_peer_address(daemon):
    info = epx.Client(daemon.socket).daemon_info()
    assert info.node == "a"
    assert info.peer_address == daemon.peer_address and info.peer_address


def test_null_handles_give_invalid_argument_not_a_crash():
    lib = _native.lib()
    out = _native.LLDispatchOut()
    hook = ctypes.c_void_p()
    code = lib.epx_ll_dispatch(None, None, None, 1, 1, 0, 0, 0, None, None, ctypes.byref(out), ctypes.byref(hook))
    assert code == 3
    assert "epx_ll_dispatch" in lib.epx_last_error().decode()
    assert lib.epx_job_barrier(None, 10) == 3
    assert lib.epx_ll_hook_run(None) == 3
    region = _native.Region()
    assert lib.epx_ll_region(None, _native.REGION_NVL, ctypes.byref(region)) == 3
    assert "epx_ll_region: buffer is NULL" in lib.epx_last_error().decode()
    assert lib.epx_normal_region(None, _native.REGION_RDMA, ctypes.byref(region)) == 3
    assert "epx_normal_region: buffer is NULL" in lib.epx_last_error().decode()
    lib.epx_ll_destroy(None)  # no-ops
    lib.epx_client_destroy(None)


def test_last_error_is_per_thread():
    import threading
    lib = _native.lib()
    assert lib.epx_job_barrier(None, 10) == 3
    seen = []
    t = threading.Thread(target=lambda: seen.append(lib.epx_last_error().decode()))
    t.start()
    t.join()
    assert seen == [""]
    assert "epx_job_barrier" in lib.epx_last_error().decode()


def test_size_hint_grows_with_tokens_and_rejects_a_bad_shape():
    small = epx.low_latency.size_hint(64, 7168, 16, 256)
    large = epx.low_latency.size_hint(128, 7168, 16, 256)
    assert 0 < small < large
    with pytest.raises(epx.EpxInvalidArgumentError) as info:
        epx.low_latency.size_hint(128, 7168, 16, 250)  # not a multiple of the ranks
    assert "num_experts" in str(info.value)


def test_missing_library_is_an_error_naming_its_path(tmp_path):
    missing = str(tmp_path / "libepx_c.so")
    code = ("import epx\n"
            "try:\n"
            "    epx.Client('/tmp/x.sock')\n"
            "except epx.EpxUnavailableError as e:\n"
            "    print('raised', e)\n")
    env = dict(os.environ, EPX_LIBRARY=missing, PYTHONPATH=os.path.dirname(os.path.dirname(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "raised" in out.stdout and missing in out.stdout
