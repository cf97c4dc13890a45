"""deep_ep.Buffer's bootstrap against real epxd daemons: several processes
in a gloo group, two daemons standing for two nodes. One all_gather_object
agrees on the job and the coordinator; the ranks then meet through the
daemons with torch.distributed gone."""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def run_ranks(tmp_path, sockets, mode):
    """Starts one process per entry of `sockets` (the rank's daemon)."""
    rendezvous = str(tmp_path / "rendezvous")
    procs = []
    for rank, socket in enumerate(sockets):
        env = dict(os.environ, EPX_SOCKET=socket)
        env.pop("EPX_JOB_ID", None)
        procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "rank_main.py"), rendezvous, str(rank),
                                       str(len(sockets)), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env))
    reports = []
    for rank, p in enumerate(procs):
        try:
            out, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"rank {rank} did not finish within 120 s")
        assert p.returncode == 0, f"rank {rank} exited with {p.returncode}:\n{err}"
        lines = [line for line in out.splitlines() if line.startswith("{")]
        reports.append(json.loads(lines[-1]) if lines else None)
    return reports


def test_three_ranks_on_two_nodes_join_one_job(tmp_path, two_daemons):
    a, b = two_daemons
    reports = run_ranks(tmp_path, [a.socket, a.socket, b.socket], "barrier")
    assert [r["rank"] for r in reports] == [0, 1, 2]
    assert {r["world"] for r in reports} == {3}
    assert len({r["job_id"] for r in reports}) == 1, "every rank must join the job rank 0 named"
    assert reports[0]["job_id"].startswith("deep_ep-")
    assert [r["local_rank"] for r in reports] == [0, 1, 0]  # index among the ranks of its node
    assert all(r["barrier"] == "ok" for r in reports)


def test_two_ranks_on_one_node(tmp_path, daemon):
    reports = run_ranks(tmp_path, [daemon.socket, daemon.socket], "barrier")
    assert [r["local_rank"] for r in reports] == [0, 1]
    assert reports[0]["job_id"] == reports[1]["job_id"]


def test_a_lost_rank_is_named_in_the_survivors_error(tmp_path, two_daemons):
    a, b = two_daemons
    reports = run_ranks(tmp_path, [a.socket, b.socket, b.socket], "lost:2")
    for r in reports[:2]:
        error = r["error"]
        assert error is not None, f"rank {r['rank']}'s barrier passed with rank 2 gone"
        assert error["class"] in ("EpxUnavailableError", "EpxRankLostError", "EpxTimeoutError"), error
        assert "rank 2" in error["message"] or "ranks 2" in error["message"] or "[2]" in error["message"], error


@pytest.mark.parametrize("layout,node_of_rank", [("aab", [0, 0, 1]), ("aba", [0, 1, 0])])
def test_ranks_know_their_nodes_and_normal_mode_checks_against_them(tmp_path, two_daemons, layout, node_of_rank):
    sockets = {d.name: d.socket for d in two_daemons}
    reports = run_ranks(tmp_path, [sockets[n] for n in layout], "nodes")
    for r in reports:
        assert r["node_of_rank"] == node_of_rank and r["num_nodes"] == 2, r
        # num_tokens_per_rdma_rank has one entry per node: [1] is refused,
        # [2] passes (the call then stops at the device check).
        assert "internode_dispatch: num_tokens_per_rdma_rank must be shaped [2], got (1,)" in r["rdma_1"], r
        assert "x must be a CUDA tensor" in r["rdma_2"], r
        # Normal mode across nodes needs equal nodes of consecutive ranks:
        # refused by name, before any GPU work.
        assert r["normal_create"] is not None, r
        assert r["normal_create"]["class"] == "EpxFailedPreconditionError", r
        assert "consecutive" in r["normal_create"]["message"], r
        # No buffer was made, so get_local_buffer_tensor has nothing to
        # alias; across nodes use_rdma_buffer=True names the low-latency
        # buffer (low_latency_mode=True), not the one-node answer.
        assert r["local_nvl"]["class"] == "EpxFailedPreconditionError", r
        assert "the NVLink buffer does not exist yet" in r["local_nvl"]["message"], r
        assert r["local_rdma"]["class"] == "EpxFailedPreconditionError", r
        assert "which EPX makes on the first low_latency_dispatch" in r["local_rdma"]["message"], r
