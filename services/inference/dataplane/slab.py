"""A front end's shared-memory slab, and the allocator of its room.

The slab is an anonymous shared-memory file (`memfd_create`) that a front end creates
and maps; the model owner maps the same file from the descriptor the front end passes
over their Unix socket. Nothing is named under /dev/shm, so nothing leaks when a process
is killed: the memory goes with the last mapping, and a container's small /dev/shm does
not cap it.

`SlabAllocator` hands out 64-byte-aligned byte ranges, first fit from the lowest
address (so the pages in use stay few and warm), and merges a freed range with its free
neighbours. It is a plain class: the front end's event loop is its only user."""

from __future__ import annotations

import bisect
import mmap
import os

ALIGNMENT = 64


class SlabFull(Exception):
    """No free range is large enough now; `larger_than_slab` if none ever could be."""

    def __init__(self, wanted: int, larger_than_slab: bool) -> None:
        super().__init__(f"no free range of {wanted} bytes")
        self.wanted = wanted
        self.larger_than_slab = larger_than_slab


class SlabAllocator:
    def __init__(self, size: int) -> None:
        if size < ALIGNMENT:
            raise ValueError(f"a slab needs at least {ALIGNMENT} bytes, got {size}")
        self.size = size - size % ALIGNMENT
        self.reset()

    def reset(self) -> None:
        """Everything free again (the reader of every range is gone)."""
        # Free ranges as parallel sorted lists of starts and sizes.
        self._starts: list[int] = [0]
        self._sizes: list[int] = [self.size]
        self._taken: dict[int, int] = {}

    @property
    def used(self) -> int:
        return sum(self._taken.values())

    def allocate(self, wanted: int) -> int:
        """The offset of a free range of at least `wanted` bytes; raises SlabFull."""
        size = max(ALIGNMENT, -(-wanted // ALIGNMENT) * ALIGNMENT)
        for index, free in enumerate(self._sizes):
            if free >= size:
                start = self._starts[index]
                if free == size:
                    del self._starts[index], self._sizes[index]
                else:
                    self._starts[index] += size
                    self._sizes[index] -= size
                self._taken[start] = size
                return start
        raise SlabFull(wanted, larger_than_slab=size > self.size)

    def free(self, offset: int) -> None:
        size = self._taken.pop(offset)
        index = bisect.bisect_left(self._starts, offset)
        self._starts.insert(index, offset)
        self._sizes.insert(index, size)
        if index + 1 < len(self._starts) and offset + size == self._starts[index + 1]:
            self._sizes[index] += self._sizes.pop(index + 1)
            del self._starts[index + 1]
        if index > 0 and self._starts[index - 1] + self._sizes[index - 1] == offset:
            self._sizes[index - 1] += self._sizes.pop(index)
            del self._starts[index]


class Slab:
    """A mapped shared-memory file; `fd` stays open on the creating side to be passed on."""

    def __init__(self, memory: mmap.mmap, size: int, fd: int | None) -> None:
        self.memory = memory
        self.size = size
        self.fd = fd

    @classmethod
    def create(cls, size: int, name: str) -> Slab:
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            memory = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        return cls(memory, size, fd)

    @classmethod
    def attach(cls, fd: int, size: int) -> Slab:
        """Map a slab whose descriptor came from its creator; the descriptor is closed."""
        try:
            if os.fstat(fd).st_size < size:
                raise ValueError(f"the slab file is smaller than the {size} bytes announced")
            memory = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return cls(memory, size, None)

    def close(self) -> None:
        """Close the descriptor; the mapping goes when the last array viewing it does."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
