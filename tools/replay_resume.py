"""Replay interrupted runs on the data side only: is every batch after a resume the uninterrupted run's?

No training: the real data module (or detection loader) delivers batches; after each batch the loader state a
checkpoint would hold is kept (Lightning saves a stateful loader's ``state_dict()`` with every checkpoint and
gives it back to a new loader's ``load_state_dict()`` before the first batch); a kill after batch ``k`` throws
the loader away and a new one, in a new data module, continues from the state saved after batch ``k``.

    python tools/replay_resume.py            # shards: kills at 4,5 / 7,8 / 10,11 / 2,7,8 (8 batches an epoch)
    python tools/replay_resume.py --kills 3 9 17 --batches 30

Prints one line per chain of kills and ``every batch equal`` or the first batch that differs; exit 1 on any
difference.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import multiprocessing
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import torch

#: The chains of kills of the check (kill after these batch counts, 8 batches an epoch).
CHAINS = ((4, 5), (7, 8), (10, 11), (2, 7, 8))

OpenStream = Callable[[Optional[Any]], Iterator[Tuple[Any, Any]]]


def replay(open_stream: OpenStream, batches: int, kills: Sequence[int] = ()) -> List[Tuple[Any, Any]]:
    """The first ``batches`` trained batches, each with the state saved after it, of a run killed after each count
    in ``kills`` (each kill followed by a resume from the state saved after that batch). ``open_stream(state)``
    starts a new process's data side: it yields ``(batch, state after it)``, from the start when ``state`` is
    ``None``."""
    seen: List[Tuple[Any, Any]] = []
    for stop in [*sorted(k for k in kills if 0 < k < batches), batches]:
        seen += resume_from(open_stream, seen[-1][1] if seen else None, stop - len(seen))
    return seen


def resume_from(open_stream: OpenStream, state: Optional[Any], count: int) -> List[Tuple[Any, Any]]:
    """The next ``count`` ``(batch, state)`` of a new process resumed from ``state``; then the process is killed."""
    stream = open_stream(state)
    got = list(itertools.islice(stream, count))
    stream.close()  # the killed process: its loader and workers are gone
    if len(got) < count:
        raise RuntimeError(f"the stream ended after {len(got)} batches, before {count}")
    return got


def lightning_stream(make_datamodule: Callable[[], Any]) -> OpenStream:
    """``open_stream`` for a classification data module, as Lightning drives it: ``setup("fit")``,
    ``train_dataloader()``, the saved loader state loaded before the first ``iter``, one ``iter`` per epoch,
    the next batch fetched before the current one is trained (Lightning's prefetch),
    ``on_after_batch_transfer`` on the trained batch, then ``state_dict()`` (what the checkpoint holds)."""

    def open_stream(saved: Optional[Any]) -> Iterator[Tuple[Any, Any]]:
        dm = make_datamodule()
        dm.setup("fit")
        loader = dm.train_dataloader()
        if saved is not None:
            loader.load_state_dict(copy.deepcopy(saved))
        empty = 0
        try:
            while empty < 2:
                it = iter(loader)
                nxt = next(it, None)
                empty = empty + 1 if nxt is None else 0
                while nxt is not None:
                    batch, nxt = nxt, next(it, None)
                    images, labels = dm.on_after_batch_transfer(batch, 0)
                    yield (images, labels), copy.deepcopy(loader.state_dict())
        finally:
            kill_workers()

    return open_stream


def kill_workers() -> None:
    """kill -9 this process's data workers (its multiprocessing children), as the kill of a run's process group
    does (the workers ignore SIGTERM, which the DataLoader's own shutdown sends after waiting for them)."""
    for worker in multiprocessing.active_children():
        if worker.is_alive():
            os.kill(worker.pid, signal.SIGKILL)
            worker.join()


def first_difference(a: Sequence[Tuple[Any, Any]], b: Sequence[Tuple[Any, Any]]) -> Optional[int]:
    """The first batch number (1-based) where two replays' batches differ (every tensor of the batch compared),
    ``None`` if none does."""
    for n, ((x, _), (y, _)) in enumerate(zip(a, b), 1):
        if len(x) != len(y) or not all(torch.equal(u, v) for u, v in zip(x, y)):
            return n
    return None if len(a) == len(b) else min(len(a), len(b)) + 1


def shard_datamodule_factory(folder: Path, per_epoch: int = 8, batch: int = 8, workers: int = 1) -> Callable[[], Any]:
    """Generated images (4 classes), written as shards; a factory of data modules that read them with ``workers``
    data workers, ``per_epoch`` batches of ``batch`` an epoch."""
    from shufflenet.classification.data import ImageFolderDataModule
    from shufflenet.classification.demo import DEMO_CLASSES, render
    from shufflenet.classification.shards import write_shards

    images = per_epoch * batch
    root = folder / "data"
    for split, n, off in (("train", images // 4, 0), ("val", 1, 10_000)):
        for label, name in enumerate(DEMO_CLASSES[:4]):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                render(label, off + 100 * label + i, 24).save(d / f"{i}.jpg", quality=90)
    write_shards(str(root), str(folder / "shards"), chunk_bytes="4KB", num_workers=1)
    return lambda: ImageFolderDataModule(
        batch_size=batch, num_workers=workers, image_size=16, resize_size=16, shards=str(folder / "shards")
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, nargs="+", action="append", help="a chain of kills (repeatable)")
    p.add_argument("--batches", type=int, default=26, help="batches to compare (default 26: into the 4th epoch)")
    args = p.parse_args(argv)
    chains = [tuple(c) for c in args.kills] if args.kills else list(CHAINS)
    bad = 0
    with tempfile.TemporaryDirectory(prefix="replay-resume-") as tmp:
        open_stream = lightning_stream(shard_datamodule_factory(Path(tmp)))
        reference = replay(open_stream, args.batches)
        for chain in chains:
            got = replay(open_stream, args.batches, chain)
            diff = first_difference(reference, got)
            kills = ",".join(map(str, chain))
            if diff is None:
                print(f"shards, kills after batches {kills}: every batch equal ({len(got)} batches)")
            else:
                bad += 1
                print(f"shards, kills after batches {kills}: batch {diff} differs from the uninterrupted run's")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
