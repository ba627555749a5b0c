"""The seeded sample stream: which sample comes next, and with which augmentation seed.

One definition for every training data path (image folders, shards, detection): a run's data are a function of
``(seed, epoch, rank, position)`` only, never of history (how often the run was interrupted, how many data
workers it has), so a resumed run needs nothing but its position to continue exactly.

* :func:`derive_seed` is the one way a seed is made from integers (NumPy's ``SeedSequence``); every other seed
  of the package's data and steps is ``derive_seed(seed, PURPOSE, ...)``.
* :func:`augmentation_seed` seeds sample ``index``'s augmentation in ``epoch``.
* :func:`step_seed` seeds the random numbers of a training step (detection's anchor and RoI sampling).
* :class:`SampleStream` is the order: epoch ``e`` is the ``e``-th ``torch.randperm(size)`` of one generator seeded
  with ``seed`` (detectron2's ``TrainingSampler(size, seed)`` order); the stream runs on across epochs and process
  ``rank`` of ``world_size`` takes its global positions ``rank, rank + world_size, ...``. Local position ``k`` of
  a process is its ``k``-th sample; a loader that has delivered ``b`` batches of ``n`` stands at ``b * n``.

Shards are the exception for the order only: litdata's ``StreamingDataset`` decides which sample comes next
(it shuffles chunks, then the samples of the chunks a worker holds) and its ``StreamingDataLoader`` carries the
position; the augmentation seed is :func:`augmentation_seed` of litdata's epoch and sample index.
"""

from __future__ import annotations

from typing import Iterator, List, Tuple

import numpy as np
import torch

__all__ = ["SampleStream", "augmentation_seed", "derive_seed", "step_seed"]

#: What a derived seed is for (the second part of :func:`derive_seed`'s input).
STEP, AUGMENTATION = 1, 2


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (NumPy's ``SeedSequence``: distinct parts give unrelated streams)."""
    state = np.random.SeedSequence([int(p) % 2**64 for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample ``index``'s augmentation in ``epoch`` (the same in any process, worker or backend)."""
    return derive_seed(seed, AUGMENTATION, epoch, index)


def step_seed(seed: int, rank: int, step: int) -> int:
    """The seed of training step ``step`` in process ``rank``."""
    return derive_seed(seed, STEP, rank, step)


class SampleStream:
    """Process ``rank`` of ``world_size``'s infinite stream of ``(epoch, index)`` over a dataset of ``size``.

    Epoch ``e``'s order is the ``e``-th ``torch.randperm(size)`` of a generator seeded with ``seed`` (``shuffle``
    off: ``0 .. size-1``); the processes share each epoch's positions round-robin and the stream continues into
    the next epoch without dropping any sample.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        if size < 1:
            raise ValueError("SampleStream needs at least one sample")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of {world_size} processes")
        self.size, self.seed, self.rank, self.world_size = int(size), int(seed), int(rank), int(world_size)
        self.shuffle = bool(shuffle)

    def global_position(self, local: int) -> int:
        return self.rank + int(local) * self.world_size

    def local_position(self, global_position: int) -> int:
        return (int(global_position) - self.rank) // self.world_size

    def augmentation_seed(self, epoch: int, index: int) -> int:
        return augmentation_seed(self.seed, epoch, index)

    def samples(self, locals_: Iterator[int]) -> Iterator[Tuple[int, int, int]]:
        """``(global position, epoch, index)`` for non-decreasing local positions (one permutation in memory)."""
        generator, epoch, perm = torch.Generator(), -1, None
        generator.manual_seed(self.seed)
        for local in locals_:
            position = self.global_position(local)
            want = position // self.size
            if want < epoch:  # positions go forward; start over if asked for an earlier epoch
                generator.manual_seed(self.seed)
                epoch = -1
            while epoch < want:
                perm = torch.randperm(self.size, generator=generator).tolist() if self.shuffle else None
                epoch += 1
            i = position % self.size
            yield position, epoch, perm[i] if perm is not None else i

    def take(self, start: int, count: int) -> List[Tuple[int, int]]:
        """``count`` samples ``(epoch, index)`` from local position ``start`` on."""
        return [(e, i) for _, e, i in self.samples(iter(range(int(start), int(start) + int(count))))]
