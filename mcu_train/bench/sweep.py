"""Run a benchmark grid as independent tasks: on a local process pool (default: one worker per core) or on an
existing Dask cluster (`scheduler="tcp://host:8786"`), so a sweep that outgrows one machine moves to many
without changing a line. A task is (function, argument): a module-level function and a picklable argument,
deterministic, so the results (returned in task order) are the same wherever they ran."""
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from mcu_train.errors import McuTrainError


def run_tasks(tasks, scheduler=None, workers=None, log=print):
    """Results of `fn(arg)` for each (fn, arg) in `tasks`, in task order. `log(line)` hears each completion."""
    tasks = list(tasks)
    t0, done = time.monotonic(), 0

    def finished(i):
        nonlocal done
        done += 1
        fn, arg = tasks[i]
        log(f"[{done}/{len(tasks)} {time.monotonic() - t0:6.0f} s] {fn.__name__} {describe(arg)}")

    results = [None] * len(tasks)
    if scheduler:
        client = _dask_client(scheduler)
        try:
            futures = {client.submit(fn, arg, pure=False): i for i, (fn, arg) in enumerate(tasks)}
            from distributed import as_completed as dask_completed
            for future in dask_completed(futures):
                results[futures[future]] = future.result()
                finished(futures[future])
        finally:
            client.close()
        return results
    workers = workers or os.cpu_count() or 1
    # spawn: the workers start clean (no threads or open sockets inherited from the caller).
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(fn, arg): i for i, (fn, arg) in enumerate(tasks)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            finished(futures[future])
    return results


def _dask_client(address):
    try:
        from distributed import Client
    except ImportError:
        raise McuTrainError("--scheduler needs Dask: pip install 'distributed'") from None
    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError) as e:
        raise McuTrainError(f"no Dask scheduler answers at {address}: {e}") from None


def describe(arg):
    """A short name for a task's argument (its own `label` when it has one)."""
    return getattr(arg, "label", None) or str(arg)
