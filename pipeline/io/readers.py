"""Reading blocks of a scene on several threads: the one reader-pool idiom of the package.

GDAL datasets must not be shared between threads, so each worker thread opens its own handles
(a factory the caller gives), uses them for the whole call and closes them itself on leaving;
OpenCV and GDAL release the GIL, so two blocks in flight keep two cores busy. The pipeline's
passes (:meth:`ReaderPool.map`) and the report's chips (:meth:`ReaderPool.map_ordered`) both
read through :class:`ReaderPool`.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterable, Iterator, TypeVar

import cv2
from rasterio.windows import Window

T = TypeVar("T")
R = TypeVar("R")
Readers = tuple
#: opens one worker's handles: entered and left on the worker's own thread
OpenReaders = Callable[[], ContextManager[Readers]]


class ReaderPool:
    """Runs work over blocks on ``workers`` threads, each with its own dataset handles.

    Parameters
    ----------
    open_readers : callable() -> context manager of a tuple
        Opens one worker's handles (BEFORE, AFTER on the grid, ...); entered once per worker
        thread and call, on that thread, and left there when the call ends (rasterio ties a
        dataset's GDAL environment to the thread that entered it).
    shared : tuple
        The caller's own handles, used as they are when ``workers`` is 1 (no thread at all).
    workers : int
        Threads; at most ``2 * workers`` results wait to be consumed, so memory stays bounded
        whatever the scene size.
    """

    def __init__(self, open_readers: OpenReaders, *, shared: Readers, workers: int):
        self._open_readers = open_readers
        self.shared = shared
        self.workers = max(1, workers)

    def _start(self, serve: Callable[[Readers], None],
               fail: Callable[[BaseException], None]) -> list[threading.Thread]:
        """``workers`` threads, each running ``serve(its handles)``; ``fail(error)`` when
        opening or serving raises."""
        def work() -> None:
            try:
                with self._open_readers() as readers:
                    serve(readers)
            except BaseException as err:  # handed to the consumer, raised there
                fail(err)

        threads = [threading.Thread(target=work, daemon=True) for _ in range(self.workers)]
        for t in threads:
            t.start()
        return threads

    def map(self, fn: Callable[[tuple, Readers], T], stripes: list[list]
            ) -> Iterator[tuple[object, T]]:
        """``(item[0], fn(item, readers))`` for every item of every stripe, in the order they
        are done.

        Each worker takes a whole stripe of blocks and goes down it, so the file tiles that
        neighbouring blocks share are decoded once and then found in GDAL's block cache (a
        stripe's few rows of tiles fit; a whole scene's width does not). A worker left without
        a stripe takes the lower half of what remains of the longest one (:class:`_Stripes`):
        no worker waits for another's last stripe.
        """
        if self.workers == 1:
            for stripe in stripes:
                for item in stripe:
                    yield item[0], fn(item, self.shared)
            return
        with one_opencv_thread():  # parallel blocks instead of parallel kernels
            yield from self._map(fn, stripes)

    def _map(self, fn, stripes: list[list]):
        results: queue.Queue = queue.Queue(maxsize=2 * self.workers)
        todo = _Stripes(stripes)
        stop = threading.Event()

        def put(entry) -> None:
            while not stop.is_set():
                try:
                    results.put(entry, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def go_down(readers) -> None:
            mine = None
            while not stop.is_set():
                item, mine = todo.take(mine)
                if mine is None:
                    return
                put((item[0], fn(item, readers), None))

        threads = self._start(go_down, lambda err: put((None, None, err)))
        try:
            for _ in range(sum(len(s) for s in stripes)):
                core, value, err = results.get()
                if err is not None:
                    raise err
                yield core, value
        finally:
            stop.set()
            for t in threads:
                t.join()

    def map_ordered(self, fn: Callable[[T, Readers], R], items: Iterable[T]) -> Iterator[R]:
        """``fn(item, readers)`` for every item, yielded in the order of ``items``.

        For work whose results are consumed in order (report.html's gallery rows): at most
        ``2 * workers`` results are done ahead of the one consumed, so memory stays bounded.
        Leaving the loop early cancels the work not yet started.
        """
        if self.workers == 1:
            for item in items:
                yield fn(item, self.shared)
            return
        todo: queue.SimpleQueue = queue.SimpleQueue()
        threads = self._start(lambda readers: _answer(todo, lambda item: fn(item, readers)),
                              lambda err: _answer(todo, None, err))
        ahead: deque[Future] = deque()
        try:
            for item in items:
                ahead.append(Future())
                todo.put((ahead[-1], item))
                if len(ahead) > 2 * self.workers:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:
            for future in ahead:
                future.cancel()
            for _ in threads:
                todo.put(None)
            for t in threads:
                t.join()


@contextmanager
def one_opencv_thread() -> Iterator[None]:
    """OpenCV on one thread inside (its setting restored on leaving): for work that runs its
    items side by side on threads of its own."""
    kernel_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(kernel_threads)


class _Stripes:
    """The stripes of a :meth:`ReaderPool.map` call, shared by its workers: each worker goes
    down a stripe of its own, takes the next stripe when its own is done, and when none is
    left, the lower half of the longest stripe still being gone down."""

    def __init__(self, stripes: list[list]):
        self._lock = threading.Lock()
        self._waiting = deque(deque(s) for s in stripes if s)
        self._going: list[deque] = []

    def take(self, mine: deque | None) -> tuple[object, deque | None]:
        """The next item for the worker going down ``mine`` (None at first), and the stripe it
        goes down now; (None, None) when nothing is left."""
        with self._lock:
            if not mine:
                if mine is not None:
                    self._going = [s for s in self._going if s is not mine]
                mine = self._next()
                if mine is None:
                    return None, None
                self._going.append(mine)
            return mine.popleft(), mine

    def _next(self) -> deque | None:
        if self._waiting:
            return self._waiting.popleft()
        longest = max(self._going, key=len, default=None)
        if longest is None or len(longest) < 2:
            return None
        lower = deque(longest.pop() for _ in range(len(longest) // 2))
        lower.reverse()  # in row order again
        return lower


def _answer(todo: queue.SimpleQueue, work: Callable | None, failure: BaseException | None = None
            ) -> None:
    """Answer the futures of ``todo`` with ``work(item)`` (or ``failure``) until a None."""
    while (entry := todo.get()) is not None:
        future, item = entry
        if not future.set_running_or_notify_cancel():
            continue
        if failure is not None:
            future.set_exception(failure)
            continue
        try:
            future.set_result(work(item))
        except BaseException as err:  # handed to the consumer, raised there
            future.set_exception(err)


def stripe_px(b_ds, a_ds, block_px: int, tiled_stripe_px: int = 4096) -> int:
    """Width of the stripes of blocks that one worker goes down.

    Tiled inputs: about ``tiled_stripe_px``, so that the tiles a stripe's blocks share stay in
    GDAL's block cache; files stored in strips of whole rows: the whole width (every block of a
    row reads the same strips).
    """
    tiled = all(ds.block_shapes[0][1] < ds.width for ds in (b_ds, a_ds))
    if not tiled:
        return max(b_ds.width, a_ds.width, block_px)
    return max(block_px, tiled_stripe_px // block_px * block_px)


def stripes(blocks: Iterable[tuple[Window, ...]], width_px: int) -> list[list]:
    """``blocks`` grouped into vertical stripes ``width_px`` wide, each in row order."""
    groups: dict[int, list] = {}
    for item in blocks:
        groups.setdefault(int(item[0].col_off) // width_px, []).append(item)
    return [groups[k] for k in sorted(groups)]
