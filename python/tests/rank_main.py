"""One rank of test_bootstrap: joins a gloo group, builds a deep_ep.Buffer
against the epxd at EPX_SOCKET, drops torch.distributed, then proves the
job works through the daemons alone (a barrier), and prints a JSON line.

argv: rendezvous file, rank, world size, mode ("barrier", "lost:<rank>", or
"nodes": what the rank knows of the job's nodes, and how normal mode and
get_local_buffer_tensor check against them, without a GPU)."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import deep_ep  # noqa: E402
import epx  # noqa: E402
import epx.normal  # noqa: E402


def main() -> int:
    rendezvous, rank, world, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    buffer = deep_ep.Buffer(dist.group.WORLD, low_latency_mode=True, explicitly_destroy=True)
    dist.destroy_process_group()  # from here on, only the daemons connect the ranks
    job = buffer.job
    report = {"rank": buffer.rank, "world": buffer.group_size, "job_id": job.job_id, "local_rank": job.local_rank}
    if mode == "barrier":
        job.barrier(20000)
        report["barrier"] = "ok"
    elif mode == "nodes":
        report["node_of_rank"] = buffer.node_of_rank
        report["num_nodes"] = buffer.num_nodes
        x = torch.zeros(4, 256, dtype=torch.bfloat16)
        args = dict(topk_idx=torch.zeros(4, 2, dtype=torch.int64), topk_weights=torch.zeros(4, 2),
                    is_token_in_rank=torch.zeros(4, world, dtype=torch.bool),
                    num_tokens_per_expert=torch.zeros(2 * world, dtype=torch.int32))
        for nodes in (1, buffer.num_nodes):
            try:
                buffer.internode_dispatch(x, num_tokens_per_rdma_rank=torch.zeros(nodes, dtype=torch.int32), **args)
            except epx.EpxError as e:
                report[f"rdma_{nodes}"] = str(e)
        # The memory get_local_buffer_tensor would alias: none before the
        # first dispatches; across nodes the RDMA buffer is the low-latency one.
        for key, rdma in (("local_nvl", False), ("local_rdma", True)):
            try:
                buffer.get_local_buffer_tensor(torch.uint8, use_rdma_buffer=rdma)
                report[key] = None
            except epx.EpxError as e:
                report[key] = {"class": type(e).__name__, "message": str(e)}
        try:  # collective: every rank makes it, and every rank is refused at once
            epx.normal.NormalBuffer(job, 128, 256, 2 * world, 2, 0)
            report["normal_create"] = None
        except epx.EpxError as e:
            report["normal_create"] = {"class": type(e).__name__, "message": str(e)}
    elif mode.startswith("lost:"):
        lost = int(mode.split(":")[1])
        job.barrier(20000)  # everyone is in
        if rank == lost:
            os._exit(0)  # gone without leaving: its daemon reports the rank lost
        try:
            job.barrier(20000)
            report["error"] = None
        except epx.EpxError as e:
            report["error"] = {"class": type(e).__name__, "code": e.code, "message": str(e)}
    print(json.dumps(report), flush=True)
    buffer.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
