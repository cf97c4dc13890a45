"""deep_ep.Buffer.get_local_buffer_tensor on the GPU, for the rank programs
(gpu_rank_main.py, normal_gpu_rank_main.py): the tensor aliases the memory
the buffer's C ABI reports (epx_normal_region / epx_ll_region: its address,
its size), with DeepEP's dtype, byte-offset and size semantics (but no view
past the end); a write through one view is seen through the others; a
dispatch's received rows are found in the NVLink buffer; and where the
memory does not exist, EpxFailedPreconditionError says why."""

import torch

import epx


def expect_absent(buffer, use_rdma_buffer, match):
    """get_local_buffer_tensor refuses with an EpxFailedPreconditionError
    whose message holds `match`."""
    try:
        buffer.get_local_buffer_tensor(torch.uint8, use_rdma_buffer=use_rdma_buffer)
    except epx.EpxFailedPreconditionError as e:
        assert match in str(e), f"expected {match!r} in: {e}"
        return
    raise AssertionError(f"get_local_buffer_tensor(use_rdma_buffer={use_rdma_buffer}) gave a tensor; "
                         f"expected an EpxFailedPreconditionError with {match!r}")


def expect_invalid(get, *args, **kwargs):
    try:
        get(*args, **kwargs)
    except epx.EpxInvalidArgumentError:
        return
    raise AssertionError(f"get_local_buffer_tensor{args, kwargs} was not refused")


def find_rows(buffer, rows):
    """Where the received rows `rows` (bf16 [n][hidden], CPU) lie, one after
    another, in the NVLink buffer (a 16-byte aligned byte offset), or None."""
    whole = buffer.get_local_buffer_tensor(torch.uint8)
    want = rows.contiguous().view(torch.int16).view(-1).view(torch.uint8)
    first = want[:16].to(whole.device)
    blocks = whole[:whole.numel() // 16 * 16].view(-1, 16)
    for block in (blocks == first).all(dim=1).nonzero().flatten().tolist()[:64]:
        start = block * 16
        if start + want.numel() <= whole.numel() and torch.equal(whole[start:start + want.numel()].cpu(), want):
            return start
    return None


def check_aliases(buffer, region, use_rdma_buffer, rank):
    """The views over `region` (the native buffer's region(): pointer, bytes,
    is_device). Call it only while no rank is in a call (a barrier on each
    side): it writes a pattern near the end of the memory and puts back
    what was there."""
    def get(*args, **kwargs):
        return buffer.get_local_buffer_tensor(*args, use_rdma_buffer=use_rdma_buffer, **kwargs)

    base, n = region.pointer, region.bytes
    assert base != 0 and n >= 8192, region
    device = torch.device("cuda", torch.cuda.current_device())
    whole = get(torch.uint8)
    assert whole.is_cuda and whole.device == device, (whole.device, device)
    assert whole.data_ptr() == base, f"the tensor is at {whole.data_ptr():#x}, the buffer's memory at {base:#x}"
    assert whole.dtype == torch.uint8 and tuple(whole.shape) == (n,), (whole.dtype, whole.shape, n)
    f32 = get(torch.float32)
    assert f32.data_ptr() == base and f32.dtype == torch.float32 and tuple(f32.shape) == (n // 4,)
    # The offset is in bytes; with size=None the view ends at the end of the
    # memory (DeepEP's would hold n // element_size elements from any offset).
    off = (n - 4096) // 16 * 16
    tail = get(torch.int32, offset=off)
    assert tail.data_ptr() == base + off and tail.numel() == (n - off) // 4
    last = get(torch.int64, offset=n - 24)
    assert last.data_ptr() == base + n - 24 and tuple(last.shape) == (3,)
    assert get(torch.bfloat16, offset=n).numel() == 0
    shaped = get(torch.int32, torch.Size([4, 16]), off)
    assert tuple(shaped.shape) == (4, 16) and shaped.is_contiguous() and shaped.data_ptr() == base + off

    saved = whole[off:].clone()
    pattern = (torch.arange(64, dtype=torch.int32, device=device) * 7919 + 1000 * rank + 1).view(4, 16)
    shaped.copy_(pattern)
    torch.cuda.synchronize()
    flat = pattern.view(-1)
    assert torch.equal(tail[:64], flat), "a write through one view is not seen through another"
    assert torch.equal(whole[off:off + 256].view(torch.int32), flat)
    assert torch.equal(f32[off // 4:off // 4 + 64].view(torch.int32), flat)
    halves = get(torch.bfloat16, torch.Size([2]), off + 4)  # pattern element 1, as two bf16
    assert halves.data_ptr() == base + off + 4 and torch.equal(halves.view(torch.int32), flat[1:2])
    whole[off:].copy_(saved)
    torch.cuda.synchronize()
    assert torch.equal(whole[off:], saved)

    expect_invalid(get, torch.int32, torch.Size([(n - off) // 4 + 1]), off)
    expect_invalid(get, torch.uint8, offset=n + 16)
    expect_invalid(get, torch.float32, offset=2)
