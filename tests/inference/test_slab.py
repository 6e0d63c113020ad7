"""The shared-memory slab and its allocator, without sockets: first fit from the bottom,
alignment, merging of freed neighbours, a full slab, and a slab seen from two mappings
(the owner's side maps it from the descriptor the front end passes)."""

from __future__ import annotations

import os
import random
import socket

import numpy as np
import pytest

from services.inference.dataplane.slab import ALIGNMENT, Slab, SlabAllocator, SlabFull


def test_allocations_are_aligned_first_fit_from_the_bottom():
    allocator = SlabAllocator(4096)
    first = allocator.allocate(1)
    second = allocator.allocate(100)
    third = allocator.allocate(64)
    assert (first, second, third) == (0, 64, 192)
    assert all(offset % ALIGNMENT == 0 for offset in (first, second, third))
    allocator.free(second)
    # The hole left by `second` (128 bytes) takes the next request that fits.
    assert allocator.allocate(120) == 64


def test_freed_neighbours_merge_back_into_one_range():
    allocator = SlabAllocator(1024)
    offsets = [allocator.allocate(128) for _ in range(8)]
    with pytest.raises(SlabFull):
        allocator.allocate(1)
    for offset in offsets[1::2] + offsets[::2]:
        allocator.free(offset)
    assert allocator.used == 0
    assert allocator.allocate(1024) == 0


def test_a_full_slab_and_a_request_larger_than_the_slab_say_which():
    allocator = SlabAllocator(1024)
    allocator.allocate(1000)
    with pytest.raises(SlabFull) as full:
        allocator.allocate(64)
    assert not full.value.larger_than_slab
    with pytest.raises(SlabFull) as too_big:
        allocator.allocate(2048)
    assert too_big.value.larger_than_slab


def test_reset_frees_everything():
    allocator = SlabAllocator(1024)
    for _ in range(4):
        allocator.allocate(200)
    allocator.reset()
    assert allocator.used == 0
    assert allocator.allocate(1024) == 0


def test_random_allocations_never_overlap_and_all_come_back():
    rng = random.Random(7)
    allocator = SlabAllocator(64 * 1024)
    live: dict[int, int] = {}
    for _ in range(2000):
        if live and rng.random() < 0.45:
            offset = rng.choice(list(live))
            allocator.free(offset)
            del live[offset]
            continue
        size = rng.randint(1, 3000)
        try:
            offset = allocator.allocate(size)
        except SlabFull:
            continue
        live[offset] = size
        spans = sorted((o, o + s) for o, s in live.items())
        assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:], strict=False))
        assert spans[-1][1] <= allocator.size
    for offset in list(live):
        allocator.free(offset)
    assert allocator.allocate(allocator.size) == 0


def test_the_other_side_sees_what_one_side_writes():
    """The front end creates the slab and passes its descriptor over a Unix socket (as
    it does on connect); the owner's mapping shares the same memory both ways."""
    front = Slab.create(1 << 20, "test-slab")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        assert front.fd is not None
        socket.send_fds(ours, [b"hello"], [front.fd])
        _, fds, _, _ = socket.recv_fds(theirs, 16, 1)
    owner = Slab.attach(fds[0], 1 << 20)
    written = np.arange(16, dtype=np.float32)
    np.ndarray((16,), np.float32, buffer=front.memory, offset=4096)[...] = written
    seen = np.ndarray((16,), np.float32, buffer=owner.memory, offset=4096)
    np.testing.assert_array_equal(seen, written)
    seen[:] = -1
    assert np.ndarray((16,), np.float32, buffer=front.memory, offset=4096)[3] == -1
    front.close()
    assert front.fd is None


def test_attaching_checks_the_size_announced():
    fd = os.memfd_create("small")
    os.ftruncate(fd, 4096)
    with pytest.raises(ValueError, match="smaller"):
        Slab.attach(fd, 1 << 20)
