"""Exact resume of detection training: data order and random numbers as functions of (seed, position).

detectron2's checkpoint holds the model, the scheduler and (upstream) the optimizer, but not where the data
stream is nor the random number generators: after ``--resume`` its ``TrainingSampler`` starts its seeded stream
again at index 0 and ``default_setup`` reseeds the global generators, so a resumed run trains on other images,
with other augmentations and other anchor / RoI samples than the run it continues. Here nothing of that needs
saving, because nothing of it depends on history:

* :class:`TrainingStream` yields the dataset dicts in the order of the package's one sample stream,
  :class:`shufflenet.data.stream.SampleStream` (which is ``TrainingSampler(size, seed)``'s order: the same
  ``torch.randperm`` sequence; process ``r`` of ``w`` takes positions ``r, r + w, ...``), each tagged with its
  position, and starts wherever it is told;
* :class:`SeededMapper` runs the mapper (``DatasetMapper``: flips, resizes) with Python's, NumPy's and torch's
  CPU generators seeded with :func:`~shufflenet.data.stream.augmentation_seed` of (seed, epoch, index), as every
  training data path of the package seeds a sample's augmentation, so an image is augmented the same way in any
  worker, with any ``NUM_WORKERS``, before or after a resume;
* :class:`ResumableLoader` wraps detectron2's batched loader: it keeps the loader off the global generators,
  removes the tags, and records which positions the delivered batches used. The checkpoint stores that state
  (:meth:`ResumableLoader.state_dict`); on resume every process recomputes its own state from the number of
  batches delivered (:func:`replay_batches`: detectron2's aspect-ratio grouping only looks at the dicts'
  ``width`` / ``height``) and the first process checks it against the saved one;
* :func:`iteration_seed` gives the seed the trainer applies to the global generators before each iteration
  (anchor and RoI sampling use ``torch.randperm``), from (seed, process, iteration).

Only detectron2's public data API is used: ``build_detection_train_loader`` accepts an iterable dataset and a
mapper; ``DatasetFromList`` holds the dicts.
"""

from __future__ import annotations

import itertools
import random
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import DatasetFromList
from torch.utils.data import IterableDataset, get_worker_info

from ..data.stream import SampleStream, augmentation_seed, step_seed

__all__ = [
    "POSITION_KEY",
    "ResumableLoader",
    "SeededMapper",
    "TrainingStream",
    "isolated_rng",
    "iteration_seed",
    "replay_batches",
    "seed_global_rng",
]

#: Key under which a dataset dict carries its position in the stream between the stream and the loader.
POSITION_KEY = "_shufflenet_stream_position"


def iteration_seed(seed: int, rank: int, iteration: int) -> int:
    """The seed of training iteration ``iteration`` in process ``rank`` (the generators are seeded with it)."""
    return step_seed(seed, rank, iteration)


def seed_global_rng(seed: int, cpu_only: bool = False) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch's (CPU, and CUDA unless ``cpu_only``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if cpu_only:
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


@contextmanager
def isolated_rng() -> Iterator[None]:
    """Python's, NumPy's and torch's CPU generator states are restored on exit: what runs inside consumes no
    random numbers of the code around it (torch's ``DataLoader`` draws a base seed when an iterator starts)."""
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)


class TrainingStream(IterableDataset):
    """The training dicts as an infinite stream, in ``detectron2.data.samplers.TrainingSampler(len(dicts),
    seed=seed)``'s order, process ``rank`` of ``world_size`` taking its share (global positions ``rank``,
    ``rank + world_size``, ...). Each dict carries its global position under :data:`POSITION_KEY`.

    :meth:`start_at` sets where the next iteration begins: positions held back from earlier (a partly filled
    aspect-ratio group) first, then every position from ``next_position`` on. In ``DataLoader`` workers, worker
    ``i`` of ``n`` yields every ``n``-th of those, so the loader's order is the stream's order.
    """

    def __init__(self, dicts: Sequence[dict], seed: int, rank: int = 0, world_size: int = 1) -> None:
        if not len(dicts):
            raise ValueError("TrainingStream needs at least one dataset dict")
        # width > height per dict, for replaying detectron2's aspect-ratio grouping without unpickling dicts
        self.landscape = np.fromiter((d.get("width", 0) > d.get("height", 0) for d in dicts), bool, len(dicts))
        self._dicts = DatasetFromList(list(dicts), copy=False)
        self.order = SampleStream(len(dicts), seed, rank, world_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self._held: List[int] = []
        self._next = 0

    @property
    def seed(self) -> int:
        return self.order.seed

    @seed.setter
    def seed(self, value: int) -> None:
        self.order.seed = int(value)

    def __len__(self) -> int:
        return len(self._dicts)

    def start_at(self, next_position: int, held: Sequence[int] = ()) -> None:
        """Resume the stream: ``held`` (this process's positions, local numbering) first, then ``next_position``
        onwards. Takes effect when iteration starts (detectron2 starts its loader at the first batch)."""
        self._next, self._held = int(next_position), sorted(int(p) for p in held)

    def global_position(self, local: int) -> int:
        return self.order.global_position(local)

    def local_position(self, global_position: int) -> int:
        return self.order.local_position(global_position)

    def indices(self, locals_: Iterator[int]) -> Iterator[Tuple[int, int]]:
        """``(global position, dataset index)`` for non-decreasing local positions (one permutation in memory)."""
        return ((position, index) for position, _, index in self.order.samples(locals_))

    def dicts(self, locals_: Iterator[int]) -> Iterator[dict]:
        for position, epoch, index in self.order.samples(locals_):
            d = self._dicts[index]
            d[POSITION_KEY] = (position, epoch, index)
            yield d

    def __iter__(self) -> Iterator[dict]:
        locals_: Iterator[int] = itertools.chain(self._held, itertools.count(self._next))
        info = get_worker_info()
        if info is not None and info.num_workers > 1:
            locals_ = itertools.islice(locals_, info.id, None, info.num_workers)
        return self.dicts(locals_)


class SeededMapper:
    """``mapper(dict)`` with the random generators seeded from (seed, the dict's stream position) and restored
    afterwards: each image's augmentation is a function of its position, not of the process it runs in."""

    def __init__(self, mapper: Callable[[dict], Any], seed: int) -> None:
        self.mapper, self.seed = mapper, int(seed)

    def __call__(self, dataset_dict: dict) -> Any:
        position, epoch, index = dataset_dict.pop(POSITION_KEY)
        with isolated_rng():
            seed_global_rng(augmentation_seed(self.seed, epoch, index), cpu_only=True)
            out = self.mapper(dataset_dict)
        if isinstance(out, dict):
            out[POSITION_KEY] = position
        return out


def replay_batches(
    stream: TrainingStream, batches: int, batch_size: int, aspect_ratio_grouping: bool
) -> Tuple[int, List[int]]:
    """Where this process's stream stands after ``batches`` batches: ``(next local position, held positions)``.

    Without grouping, a batch is the next ``batch_size`` positions. With it, detectron2's
    ``AspectRatioGroupedDataset`` puts each dict into one of two groups (``width > height`` or not) and yields a
    group when it holds ``batch_size`` dicts; only the dicts' ``width`` and ``height`` are read, no image."""
    if batches <= 0:
        return 0, []
    if not aspect_ratio_grouping:
        return batches * batch_size, []
    groups: Tuple[List[int], List[int]] = ([], [])
    done = 0
    for position, index in stream.indices(itertools.count()):
        group = groups[0 if stream.landscape[index] else 1]
        group.append(stream.local_position(position))
        if len(group) == batch_size:  # yielded, and the group emptied
            del group[:]
            done += 1
            if done == batches:
                return stream.local_position(position) + 1, sorted(groups[0] + groups[1])
    raise AssertionError("unreachable: the stream is infinite")


class ResumableLoader:
    """detectron2's batched training loader over a :class:`TrainingStream`, resumable at any batch.

    Iterating it yields the loader's batches with the position tags removed; each ``next`` runs inside
    :func:`isolated_rng`. :meth:`state_dict` is where the stream stands after the batches delivered so far.
    """

    def __init__(
        self,
        loader: Any,
        stream: TrainingStream,
        mapper: SeededMapper,
        batch_size: int,
        aspect_ratio_grouping: bool,
    ) -> None:
        self.loader, self.stream, self.mapper = loader, stream, mapper
        self.batch_size, self.aspect_ratio_grouping = int(batch_size), bool(aspect_ratio_grouping)
        self.batches = 0
        self._next = 0  # next local position not yet seen in a batch
        self._held: set = set()  # local positions before _next not yet delivered
        self._started = False

    @property
    def seed(self) -> int:
        return self.stream.seed

    def reseed(self, seed: int) -> None:
        """Use ``seed`` for the stream's order and the augmentation (a resumed run with a negative SEED)."""
        if self._started:
            raise RuntimeError("ResumableLoader.reseed: the loader has started already")
        self.stream.seed = self.mapper.seed = int(seed)

    def __iter__(self) -> Iterator[List[dict]]:
        self._started = True
        it = iter(self.loader)
        while True:
            with isolated_rng():
                try:
                    batch = next(it)
                except StopIteration:
                    return
            local = [self.stream.local_position(d.pop(POSITION_KEY)) for d in batch]
            top = max(local) + 1
            if top > self._next:
                self._held.update(range(self._next, top))
                self._next = top
            self._held.difference_update(local)
            self.batches += 1
            yield batch

    def state_dict(self) -> Dict[str, Any]:
        return {
            "seed": self.stream.seed,
            "world_size": self.stream.world_size,
            "batches": self.batches,
            "next": self._next,
            "held": sorted(self._held),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> Optional[str]:
        """Continue where :meth:`state_dict` was taken (see :meth:`resume`)."""
        return self.resume(int(state["batches"]), state)

    def resume(self, batches: int, saved: Optional[Dict[str, Any]] = None) -> Optional[str]:
        """Continue after ``batches`` batches (the checkpoint's iteration + 1). Returns a reason when the result
        cannot match the run that wrote ``saved`` (``None`` when it does)."""
        if self._started:
            raise RuntimeError("ResumableLoader.resume: the loader has started already")
        next_, held = replay_batches(self.stream, batches, self.batch_size, self.aspect_ratio_grouping)
        problem = None
        if saved is not None and self.stream.rank == 0:
            if int(saved.get("world_size", self.stream.world_size)) != self.stream.world_size:
                problem = f"the checkpoint was written by {saved['world_size']} processes, this run has " + str(
                    self.stream.world_size
                )
            elif int(saved.get("batches", batches)) != batches:
                problem = f"the checkpoint's loader had delivered {saved['batches']} batches, not {batches}"
            elif (int(saved["next"]), list(saved["held"])) != (next_, held):
                # the saved state is what happened (e.g. the mapper dropped an image): follow it in this process
                next_, held = int(saved["next"]), [int(p) for p in saved["held"]]
                problem = "the saved data position differs from the recomputed one (did the mapper skip images?)"
        self.stream.start_at(next_, held)
        self.batches, self._next, self._held = batches, next_, set(held)
        return problem
