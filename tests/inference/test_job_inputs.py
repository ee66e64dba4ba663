"""The inputs of a ``benco predict`` job: planned once, shared among processes so that every image
is read by exactly one of them, whatever their number; the job's progress bar; masks written in
threads, in order."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from imdlbenco_maskclip.common.errors import UserError
from imdlbenco_maskclip.inference.batch import in_threads
from imdlbenco_maskclip.inference.job_inputs import Unit, plan_inputs, read_inputs, share_bounds, worker_order
from imdlbenco_maskclip.inference.job_progress import JobProgress


def shares(units: list[Unit], world_size: int) -> list[list[Unit]]:
    return [units[slice(*share_bounds(units, rank, world_size))] for rank in range(world_size)]


@pytest.mark.parametrize("world_size", [1, 2, 3, 5, 16, 40])
def test_each_unit_goes_to_one_process_in_order_and_shares_are_even(world_size):
    counts = [5, 5, 2, 1, 1, 1, 1, 5, 5, 3, 1, 1, 100, 1]
    units = [Unit(f"source{i}", count) for i, count in enumerate(counts)]
    split = shares(units, world_size)
    assert [unit for share in split for unit in share] == units  # contiguous, each once, in the job's order
    images = [sum(unit.count for unit in share) for share in split]
    assert sum(images) == sum(counts)
    for share, size in zip(split, images):  # a share holds its 1/N of the images, give or take its last unit
        assert size - (share[-1].count if share else 0) <= -(-sum(counts) // world_size)


@pytest.fixture
def mixed_inputs(opensdi_root, tmp_path):
    """Two shards of sd2 (12 and 8 rows, row groups of 5) and a folder of three photos, with an output
    folder inside it."""
    photos = tmp_path / "photos"
    (photos / "nested").mkdir(parents=True)
    for name in ("b.png", "a.jpg", "nested/c.png"):
        Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(photos / name)
    (photos / "readme.txt").write_text("not an input")
    (photos / "out" / "predictions").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(photos / "out" / "earlier_mask.png")
    shards = sorted(str(p) for p in (opensdi_root / "data").glob("sd2-*.parquet"))
    return photos, shards


def test_the_plan_is_the_order_given_each_input_once_outputs_left_out(mixed_inputs):
    photos, shards = mixed_inputs
    units = plan_inputs([shards[0], str(photos), str(photos / "a.jpg"), *shards], leave_out=photos / "out")
    assert [(u.source, u.group, u.count) for u in units if u.shard is not None] == [
        (shards[0], 0, 5),
        (shards[0], 1, 5),
        (shards[0], 2, 2),
        (shards[1], 0, 5),
        (shards[1], 1, 3),
    ]
    assert [(u.source, u.key) for u in units if u.shard is None] == [
        (str(photos / "a.jpg"), "a.jpg"),
        (str(photos / "b.png"), "b.png"),
        (str(photos / "nested" / "c.png"), "nested/c.png"),
    ]
    with pytest.raises(UserError, match="INPUTS: no image, folder or shard at nowhere.jpg"):
        plan_inputs(["nowhere.jpg"])
    with pytest.raises(UserError, match="no images found"):
        plan_inputs([str(photos / "out")], leave_out=photos / "out")


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_the_shares_read_every_input_once(mixed_inputs, world_size):
    photos, shards = mixed_inputs
    units = plan_inputs([str(photos), *shards], leave_out=photos / "out")
    whole = read_inputs(units)
    assert len(whole) == 3 + 20 and len({(i.source, i.name) for i in whole}) == 23
    split = [read_inputs(share) for share in shares(units, world_size)]
    assert [(i.source, i.name) for share in split for i in share] == [(i.source, i.name) for i in whole]
    row = next(i for share in split for i in share if i.load is not None)
    assert row.load().mode == "RGB"  # the row's own bytes, read in this process


@pytest.mark.parametrize("count, batch_size, workers", [(23, 4, 2), (23, 4, 3), (8, 4, 4), (5, 8, 2), (30, 1, 2)])
def test_each_worker_reads_a_contiguous_part(count, batch_size, workers):
    order = worker_order(count, batch_size, workers)
    assert sorted(order) == list(range(count))
    batches = [order[k : k + batch_size] for k in range(0, count, batch_size)]
    for worker in range(workers):  # what the DataLoader hands worker w: batches w, w + workers, ...
        read = [i for batch in batches[worker::workers] for i in batch]
        if read:
            assert read == list(range(read[0], read[0] + len(read)))


def test_the_progress_bar_counts_the_whole_job_from_its_own_share():
    stream = io.StringIO()
    progress = JobProgress(share=10, job=19, processes=2, stream=stream)
    for _ in range(5):
        progress.update(1)
    assert progress.bar.n == pytest.approx(9.5)  # half the share done: half the job
    for _ in range(5):
        progress.update(1)
    progress.close()
    assert "19/19" in stream.getvalue() and "2 processes" in stream.getvalue()


def test_work_in_threads_comes_back_in_order_with_a_bounded_number_in_flight():
    started, in_flight, most = [], [0], [0]
    lock = threading.Lock()

    def work(item: int) -> int:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.002 * (item % 3))
        with lock:
            in_flight[0] -= 1
        return item * item

    def items():
        for item in range(40):
            started.append(item)
            yield item

    assert list(in_threads(work, items(), threads=3, ahead=5)) == [i * i for i in range(40)]
    assert most[0] <= 3 and started == list(range(40))
