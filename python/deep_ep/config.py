"""deep_ep.Config: DeepEP's tuning record for the normal-mode kernels.

EPX's normal-mode kernels take num_sms (blocks per kernel; 0 or absent:
20); the chunk sizes are kept but change nothing (EPX writes rows straight
to their final place, with no chunked queues). The NVLink size hint is the
bytes EPX's buffer needs for 4096 tokens per rank (a Buffer's num_nvl_bytes
sets how many tokens per rank its normal mode holds); the RDMA hint is 0:
across nodes EPX sizes the window of its network hop itself, for the
tokens num_nvl_bytes holds, and ignores num_rdma_bytes."""

HINT_TOKENS_PER_RANK = 4096


class Config:
    def __init__(self, num_sms: int = 20, num_max_nvl_chunked_send_tokens: int = 6,
                 num_max_nvl_chunked_recv_tokens: int = 256, num_max_rdma_chunked_send_tokens: int = 6,
                 num_max_rdma_chunked_recv_tokens: int = 256) -> None:
        self.num_sms = num_sms
        self.num_max_nvl_chunked_send_tokens = num_max_nvl_chunked_send_tokens
        self.num_max_nvl_chunked_recv_tokens = num_max_nvl_chunked_recv_tokens
        self.num_max_rdma_chunked_send_tokens = num_max_rdma_chunked_send_tokens
        self.num_max_rdma_chunked_recv_tokens = num_max_rdma_chunked_recv_tokens

    def get_nvl_buffer_size_hint(self, hidden_bytes: int, num_ranks: int) -> int:
        from epx.normal import size
        # top-k at the kernels' limit and one expert per rank: an upper bound
        # for every router (experts add 4 bytes per rank each, top-k more).
        return size(HINT_TOKENS_PER_RANK, hidden_bytes // 2, num_ranks, num_ranks, 32)

    def get_rdma_buffer_size_hint(self, hidden_bytes: int, num_ranks: int) -> int:
        return 0

    def __repr__(self) -> str:
        return (f"Config(num_sms={self.num_sms}, nvl_send={self.num_max_nvl_chunked_send_tokens}, "
                f"nvl_recv={self.num_max_nvl_chunked_recv_tokens}, rdma_send={self.num_max_rdma_chunked_send_tokens}, "
                f"rdma_recv={self.num_max_rdma_chunked_recv_tokens})")
