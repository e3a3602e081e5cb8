"""Background threads: work done in order, errors brought back, early stops cleaned up."""

import threading
import time

import pytest

from avtokens.background import InOrderWorker, prefetched


def test_the_worker_runs_every_item_in_order_before_close_returns():
    done = []
    with InOrderWorker(lambda item: (time.sleep(0.001), done.append(item)), depth=2) as worker:
        for i in range(50):
            worker.put(i)
    assert done == list(range(50))


def test_an_error_in_the_worker_is_raised_in_the_caller():
    def work(item):
        if item == 3:
            raise ValueError("item 3 is bad")

    with pytest.raises(ValueError, match="item 3 is bad"):
        with InOrderWorker(work) as worker:
            for i in range(100):
                worker.put(i)


def test_leaving_on_an_error_stops_the_worker_and_keeps_the_callers_error():
    started = threading.active_count()
    with pytest.raises(KeyError):
        with InOrderWorker(lambda item: time.sleep(0.01)) as worker:
            worker.put(1)
            raise KeyError("the caller's")
    assert threading.active_count() == started


def test_prefetched_items_arrive_in_order_and_errors_follow_them():
    assert list(prefetched(range(20), lambda x: x * x, depth=3)) == [x * x for x in range(20)]

    def failing():
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetched(failing()):
            got.append(item)
    assert got == [1]


def test_stopping_early_cancels_the_producer():
    cancelled = threading.Event()

    def endless():
        while not cancelled.is_set():
            yield 0

    started = threading.active_count()
    items = prefetched(endless(), depth=2, cancel=cancelled.set)
    assert next(items) == 0
    items.close()
    assert cancelled.is_set() and threading.active_count() == started
