"""One ImageContainsTrigger watching 10,000 processing tasks on the local server.

Measures, as medians over ``--repeats`` runs and against baselines taken in the same run:

* peak memory (RSS) added while the trigger runs, over the process's RSS just before;
* the longest event-loop stall seen by a 5 ms ticker, next to the ticker's stall on an idle loop,
  and the garbage collections that ran while watching: a full collection scans the whole heap of an
  Airflow process (about 150 ms here), so the trigger must not leave garbage that brings them on.
  The baseline is the same watch with the hook making a new retry object per call, as it once did;
* GETs issued per unfinished task per poll cycle (server-side request counts);
* the delay between the last task becoming finished and the trigger's event;
* the duration of one full poll cycle with 50 ms injected latency per request, next to a
  synchronous bulk read (``hook.get_tasks``) of the same tasks.

A second part (``--part triggerer``) puts a whole triggerer's load on one event loop: 100 triggers of
1,000 tasks each (100,000 outstanding images) polling a local server that speaks TLS with a
self-signed certificate, at 0 ms and 50 ms latency. Each trigger runs its poll cycle inside the hook's
``reusing_connections`` as ``run`` does, all triggers together cycle by cycle, and the child process
reports the peak RSS added, the longest loop stall and each full cycle's time. The baseline, in the
same run, is the transport as it was: a new aiohttp session per call and trigger, and the TLS context
built on the event loop for every hook. Results replace the ``bench:trigger-triggerer`` section.

The server has no simulated workforce, so the ``image-contains`` tasks stay ``processing`` until
the benchmark finishes them "on command" in the server's database: all but one after two cycles,
the last one once a cycle has recorded the others, so its finish time is known exactly. Each
watch runs in a fresh child process. Results replace the ``bench:trigger`` section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import asynccontextmanager
from functools import cached_property
from pathlib import Path

from report import write_section

from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from airflow_provider_imagecontains.triggers import imagecontains as trigger_module
from airflow_provider_imagecontains.triggers._tracking import TaskTracker
from airflow_provider_imagecontains.triggers.imagecontains import ImageContainsTrigger
from imagecontains_gateway.store import COMPLETED, PROCESSING, TaskStore
from imagecontains_gateway.testing import LocalCrowdServer

SECTION = "trigger"
TRIGGERER_SECTION = "trigger-triggerer"
FUNCTION = "image-contains"
TICK = 0.005


class PerCallRetryHook(ImageContainsHook):
    """The baseline: the hook as it was, with a new tenacity retry object for every call (a copy of the
    worker's), which leaves reference-cycle garbage behind each call."""

    async def _asend(self, session, proxy, retrying, *call):
        return await super()._asend(session, proxy, retrying.copy(), *call)


class CountingTrigger(ImageContainsTrigger):
    """The real trigger, counting its poll cycles and the unfinished tasks each one had to read."""

    cycles = 0
    unfinished_polled = 0

    async def _poll(self, hook, tracker):
        self.cycles += 1
        self.unfinished_polled += len(tracker.unfinished)
        return await super()._poll(hook, tracker)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples RSS every 5 ms in a thread (no work on the measured event loop)."""

    def __init__(self) -> None:
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(TICK):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def longest_stall_while(coroutine) -> tuple[object, float]:
    """Run ``coroutine`` next to a 5 ms ticker; return its result and the ticker's worst lateness."""
    worst = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(TICK)
            worst = max(worst, time.perf_counter() - start - TICK)

    ticking = asyncio.create_task(ticker())
    try:
        return await coroutine, worst
    finally:
        done.set()
        await ticking


async def stalls_while(
    coroutine, phase: list[int] | None = None, collections: CollectionLog | None = None
) -> tuple[object, float, dict[int, float], dict[int, float]]:
    """Run ``coroutine`` next to a 5 ms ticker; return its result, the ticker's worst lateness (wall clock,
    which includes time the OS did not run the process) and, per phase (``phase[0]``, set by the
    coroutine), the most CPU time the loop's thread spent between two ticks: the loop's own blocking
    work, whatever else the machine runs; and the same less the garbage collections ``collections``
    saw in between (the interpreter's pauses, not the loop's work)."""
    phase = phase if phase is not None else [0]
    worst_wall = 0.0
    worst_cpu: dict[int, float] = {}
    worst_outside_gc: dict[int, float] = {}
    done = asyncio.Event()

    def paused() -> float:
        return collections.total_pause if collections is not None else 0.0

    async def ticker() -> None:
        nonlocal worst_wall
        while not done.is_set():
            start, cpu_start, pause_start, now_phase = time.perf_counter(), time.thread_time(), paused(), phase[0]
            await asyncio.sleep(TICK)
            worst_wall = max(worst_wall, time.perf_counter() - start - TICK)
            cpu = time.thread_time() - cpu_start
            worst_cpu[now_phase] = max(worst_cpu.get(now_phase, 0.0), cpu)
            outside = max(0.0, cpu - (paused() - pause_start))
            worst_outside_gc[now_phase] = max(worst_outside_gc.get(now_phase, 0.0), outside)

    ticking = asyncio.create_task(ticker())
    try:
        return await coroutine, worst_wall, worst_cpu, worst_outside_gc
    finally:
        done.set()
        await ticking


def use_server(server: LocalCrowdServer) -> None:
    os.environ.update(server.airflow_connection_env())


def create_tasks(count: int) -> list[str]:
    names = task_names(count)
    inputs = {
        name: {"image": {"url": f"https://img.example.com/{name}.jpg"}, "target": {"label": "person"}} for name in names
    }
    ImageContainsHook().put_tasks(FUNCTION, inputs)
    return names


def gets(server: LocalCrowdServer) -> int:
    return sum(n for (method, _status), n in server.request_counts().items() if method == "GET")


def set_state(server: LocalCrowdServer, names: list[str], state: str) -> float:
    """Finish (or reset) ``names`` at once, "on command", in the server's database; return when."""
    result = json.dumps({"containsTarget": True}) if state == COMPLETED else None
    account = server.account.account_id  # with function and name: the unique index, not a table scan
    with sqlite3.connect(server.db_path, timeout=30) as conn:
        conn.executemany(
            "UPDATE tasks SET state = ?, result = ? WHERE account = ? AND function = ? AND name = ?",
            [(state, result, account, FUNCTION, name) for name in names],
        )
    return time.time()


def wait_for_gets(server: LocalCrowdServer, count: int, child: subprocess.Popen) -> None:
    start = gets(server)
    while gets(server) - start < count:
        if child.poll() is not None:
            raise RuntimeError(f"the watching child process ended early ({child.returncode})")
        time.sleep(0.2)


def wait_until_one_task_is_polled(server: LocalCrowdServer, poll: float, child: subprocess.Popen) -> None:
    """Wait until a whole poll interval sees at most two GETs: only the last task is still being polled."""
    while True:
        before = gets(server)
        time.sleep(poll * 1.5)
        if child.poll() is not None:
            raise RuntimeError(f"the watching child process ended early ({child.returncode})")
        if gets(server) - before <= 2:
            return


def run_watch(
    server: LocalCrowdServer, db: Path, names: list[str], args: argparse.Namespace, per_call_retry: bool = False
) -> dict:
    """Watch ``names`` from a fresh child process (clean RSS baseline, a heap like a triggerer's).

    All tasks stay processing for two cycles; then all but one finish at once; once the trigger
    polls only the last one, that one finishes: its finish time is known exactly.
    """
    set_state(server, names, PROCESSING)
    gets_before = gets(server)
    result_file = db.with_name("watch-result.json")
    command = [
        sys.executable,
        __file__,
        "--watch",
        str(result_file),
        "--tasks",
        str(len(names)),
        "--poll",
        str(args.poll),
    ]
    # The child's log goes nowhere: a pipe nobody reads would fill and block it.
    child = subprocess.Popen([*command, *(["--per-call-retry"] if per_call_retry else [])], stdout=subprocess.DEVNULL)
    try:
        wait_for_gets(server, 2 * len(names), child)
        set_state(server, names[:-1], COMPLETED)
        wait_until_one_task_is_polled(server, args.poll, child)
        last_finished_at = set_state(server, names[-1:], COMPLETED)
        if child.wait(timeout=600):
            raise RuntimeError(f"the watching child process failed ({child.returncode})")
    finally:
        if child.poll() is None:
            child.kill()
    result = json.loads(result_file.read_text())
    result["gets_per_unfinished"] = (gets(server) - gets_before) / result.pop("unfinished_polled")
    result["resume_delay_s"] = result.pop("event_at") - last_finished_at
    return result


def task_names(count: int) -> list[str]:
    return [f"watch-{i:05d}" for i in range(count)]


class CollectionLog:
    """Counts the garbage collections per generation, the longest pause and their total, through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        self.longest_pause = 0.0
        self.total_pause = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            pause = time.perf_counter() - self._started
            self.counts[info["generation"]] += 1
            self.longest_pause = max(self.longest_pause, pause)
            self.total_pause += pause

    def __enter__(self) -> CollectionLog:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def watch_in_this_process(count: int, poll: float, per_call_retry: bool) -> dict:
    names = task_names(count)
    if per_call_retry:
        trigger_module.ImageContainsHook = PerCallRetryHook
    trigger = CountingTrigger(
        task_names=names,
        function_name=FUNCTION,
        imagecontains_conn_id="imagecontains_default",
        poll_interval=poll,
        max_poll_interval=poll,
        log_interval=3600,
    )
    rss_before = rss_bytes()

    async def first_event() -> tuple[dict, float]:
        event = await anext(trigger.run())
        return event.payload, time.time()

    with PeakRss() as memory, CollectionLog() as collections:
        (payload, event_at), stall = asyncio.run(longest_stall_while(first_event()))
    assert payload["status"] == "success" and len(payload["outcomes"]) == count
    return {
        "rss_added_mb": (memory.peak - rss_before) / 2**20,
        "stall_ms": stall * 1000,
        "unfinished_polled": trigger.unfinished_polled,
        "cycles": trigger.cycles,
        "event_at": event_at,
        "heap_objects": len(gc.get_objects()),
        "full_collections": collections.counts[2],
        "young_collections": collections.counts[0] + collections.counts[1],
        "longest_collection_ms": collections.longest_pause * 1000,
    }


def idle_stall(seconds: float) -> float:
    return asyncio.run(longest_stall_while(asyncio.sleep(seconds)))[1] * 1000


def full_cycle_seconds(names: list[str]) -> float:
    trigger = ImageContainsTrigger(
        task_names=names, function_name=FUNCTION, imagecontains_conn_id="imagecontains_default"
    )
    hook = ImageContainsHook()
    tracker = TaskTracker(names)

    async def one_cycle() -> float:
        start = time.perf_counter()
        await trigger._poll(hook, tracker)
        return time.perf_counter() - start

    return asyncio.run(one_cycle())


def sync_bulk_seconds(names: list[str]) -> float:
    start = time.perf_counter()
    ImageContainsHook().get_tasks(FUNCTION, names)
    return time.perf_counter() - start


class PerCallSessionHook(ImageContainsHook):
    """The baseline of the triggerer part: the transport as it was, with a new aiohttp session per call
    (``reusing_connections`` shares nothing) and a TLS context built for each hook on the event loop."""

    @asynccontextmanager
    async def reusing_connections(self):
        await self._aprepare()
        yield

    def _prepare(self) -> None:
        _ = self.credentials, self.account_id

    @cached_property
    def _aiohttp_ssl(self):
        return ssl.create_default_context(cafile=str(self._verify))


def many_triggers_in_this_process(
    triggers: int, tasks: int, cycles: int, per_call_session: bool, freeze_heap: bool = False
) -> dict:
    """Poll ``triggers`` x ``tasks`` processing tasks for ``cycles`` full cycles on one event loop; with
    ``freeze_heap``, after moving the start-up heap out of the collector's sight (``gc.freeze()``)."""
    hook_class = PerCallSessionHook if per_call_session else ImageContainsHook
    names = task_names(triggers * tasks)
    groups = [names[i * tasks : (i + 1) * tasks] for i in range(triggers)]
    # A running triggerer has run triggers before: the first read's one-time imports are not these triggers'.
    warm_up = ImageContainsHook(imagecontains_conn_id="imagecontains_default")
    asyncio.run(warm_up.aget_task(FUNCTION, names[0]))
    if freeze_heap:
        gc.freeze()
    rss_before = rss_bytes()

    async def all_triggers() -> list[float]:
        go = [asyncio.Event() for _ in range(cycles)]
        done = [asyncio.Event() for _ in range(cycles)]
        finished = [0] * cycles

        async def one_trigger(group: list[str]) -> None:
            trigger = ImageContainsTrigger(
                task_names=group, function_name=FUNCTION, imagecontains_conn_id="imagecontains_default"
            )
            hook = hook_class(imagecontains_conn_id="imagecontains_default")
            tracker = TaskTracker(group)
            async with hook.reusing_connections():
                for cycle in range(cycles):
                    await go[cycle].wait()
                    outcome = await trigger._poll(hook, tracker)
                    if outcome.error is not None or outcome.answers != len(group):
                        errors.append(f"{type(outcome.error).__name__}: {outcome.answers} answers")
                    finished[cycle] += 1
                    if finished[cycle] == triggers:
                        done[cycle].set()

        running = [asyncio.create_task(one_trigger(group)) for group in groups]
        await asyncio.sleep(0.5)  # every trigger is waiting for the first cycle
        cycle_times = []
        for cycle in range(cycles):
            phase[0] = cycle
            start = time.perf_counter()
            go[cycle].set()
            await done[cycle].wait()
            cycle_times.append(time.perf_counter() - start)
            print(f"cycle of {triggers * tasks:,} reads: {cycle_times[-1]:.1f} s", flush=True)
        await asyncio.gather(*running)
        return cycle_times

    errors: list[str] = []
    _, idle_wall, _, _ = asyncio.run(stalls_while(asyncio.sleep(5.0)))
    phase = [0]
    with PeakRss() as memory, CollectionLog() as collections:
        cycle_times, stall, cpu_stalls, outside_gc = asyncio.run(stalls_while(all_triggers(), phase, collections))
    # What any full collection of this process costs, whoever brings it on: the triggers have ended.
    start = time.perf_counter()
    gc.collect()
    heap_collection = time.perf_counter() - start
    return {
        "rss_added_mb": (memory.peak - rss_before) / 2**20,
        "stall_ms": stall * 1000,
        "cpu_stall_ms": max(cpu_stalls.values()) * 1000,
        "first_cycle_cpu_stall_ms": cpu_stalls.get(0, 0.0) * 1000,
        "later_cycles_cpu_stall_ms": max((v for k, v in cpu_stalls.items() if k > 0), default=0.0) * 1000,
        "outside_gc_stall_ms": max(outside_gc.values()) * 1000,
        "heap_collection_ms": heap_collection * 1000,
        "heap_objects": len(gc.get_objects()),
        "idle_stall_ms": idle_wall * 1000,
        "full_collections": collections.counts[2],
        "longest_collection_ms": collections.longest_pause * 1000,
        "cycle_s": statistics.median(cycle_times),
        "cycles_s": cycle_times,
        "incomplete_cycles": errors,
    }


def insert_processing_tasks(db: Path, count: int) -> list[str]:
    """Create ``count`` processing tasks straight in the server's database (100,000 PUTs would take minutes)."""
    from imagecontains_gateway.config import DEMO_ACCOUNT

    names = task_names(count)
    store = TaskStore(str(db))
    now = time.time()
    with store.transaction():
        for name in names:
            task_input = {"image": {"url": f"https://img.example.com/{name}.jpg"}, "target": {"label": "person"}}
            store.insert(DEMO_ACCOUNT.account_id, FUNCTION, name, json.dumps(task_input), now, now + 30 * 86400)
    return names


def run_many_triggers(args: argparse.Namespace, per_call_session: bool, freeze_heap: bool) -> dict:
    command = [sys.executable, __file__, "--part", "triggerer-child", "--triggers", str(args.triggers)]
    command += ["--tasks-per-trigger", str(args.tasks_per_trigger), "--cycles", str(args.cycles)]
    command += [*(["--per-call-retry"] if per_call_session else []), *(["--freeze-heap"] if freeze_heap else [])]
    with tempfile.NamedTemporaryFile(suffix=".json") as result_file:
        command += ["--watch", result_file.name]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=3600)
        return json.loads(Path(result_file.name).read_text())


def triggerer_part(args: argparse.Namespace) -> None:
    results: dict[int, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-triggerer-") as tmp:
        db = Path(tmp) / "crowd.db"
        insert_processing_tasks(db, args.triggers * args.tasks_per_trigger)
        for latency_ms in (0, 50):
            with LocalCrowdServer(db, subprocess=True, tls=True, workforce_size=0, latency_ms=latency_ms) as server:
                use_server(server)
                results[latency_ms] = {}
                for name, per_call_session, freeze_heap in (
                    ("reused", False, False),
                    ("baseline", True, False),
                    ("frozen", False, True),
                ):
                    results[latency_ms][name] = run_many_triggers(args, per_call_session, freeze_heap)
                    print(f"{latency_ms} ms, {name}: {results[latency_ms][name]}", flush=True)
    section = build_triggerer_section(args, results)
    print(section)
    if not args.no_write:
        write_section(TRIGGERER_SECTION, section)


def build_triggerer_section(args: argparse.Namespace, results: dict[int, dict[str, dict]]) -> str:
    total = args.triggers * args.tasks_per_trigger
    columns = ("reused", "baseline", "frozen")
    rows = []

    def row(runs: dict[str, dict], latency_ms: int, measure: str, cell, target: str) -> str:
        return f"| {latency_ms} ms | {measure} | " + " | ".join(cell(runs[c]) for c in columns) + f" | {target} |"

    for latency_ms, runs in results.items():
        rows += [
            row(runs, latency_ms, "peak RSS added", lambda r: f"{r['rss_added_mb']:.1f} MB", "< 100 MB"),
            row(
                runs,
                latency_ms,
                "longest event-loop stall, wall clock (5 ms ticker)",
                lambda r: f"{r['stall_ms']:.0f} ms (idle loop: {r['idle_stall_ms']:.0f} ms)",
                "< 100 ms",
            ),
            row(
                runs,
                latency_ms,
                "longest event-loop stall, the loop thread's CPU time between two ticks: first cycle / later cycles",
                lambda r: f"{r['first_cycle_cpu_stall_ms']:.0f} ms / {r['later_cycles_cpu_stall_ms']:.0f} ms",
                "< 100 ms",
            ),
            row(
                runs,
                latency_ms,
                "longest event-loop stall outside garbage collections (the CPU-time row less the collections' time)",
                lambda r: f"{r['outside_gc_stall_ms']:.0f} ms",
                "< 100 ms",
            ),
            row(
                runs,
                latency_ms,
                "full garbage collections, longest collection",
                lambda r: f"{r['full_collections']}, {r['longest_collection_ms']:.0f} ms",
                "-",
            ),
            row(
                runs,
                latency_ms,
                "one full collection of the same process once the triggers ended (`gc.collect()`)",
                lambda r: f"{r['heap_collection_ms']:.0f} ms ({r['heap_objects']:,} objects)",
                "-",
            ),
            row(
                runs,
                latency_ms,
                f"one full cycle ({total:,} reads), median of {args.cycles}",
                lambda r: f"{r['cycle_s']:.1f} s",
                "<= 90 s (floor 78 s)" if latency_ms == 50 else "-",
            ),
        ]
    return "\n".join(
        [
            f"## {args.triggers} triggers x {args.tasks_per_trigger:,} tasks in one event loop, TLS "
            "(`bench/bench_trigger.py --part triggerer`)",
            "",
            f"{args.triggers} triggers of {args.tasks_per_trigger:,} `processing` tasks each ({total:,} outstanding "
            "images, one triggerer's load) poll in one child process's event loop, all together cycle by cycle, "
            "each inside the hook's `reusing_connections` as `ImageContainsTrigger.run` does. The local server "
            "(another child process) serves HTTPS with a self-signed certificate (the connection's `verify`). "
            "Baseline, same run and server: the transport as it was, a new aiohttp session per call and trigger "
            "and a TLS context built on the event loop for each hook (all columns start a worker only once it "
            "has its place in the shared read limit). Last column, same run: this transport in a process whose "
            "start-up heap (Airflow's imports) was frozen with `gc.freeze()` before the triggers started, a "
            "process-wide choice that the triggerer does not make and a provider must not make for it. Medians of "
            "the cycles of one run per column. The server and the client share the machine's 2 cores, so cycle "
            "times are upper bounds.",
            "",
            "| latency | measure | reused session, TLS context off the loop | baseline (same run) "
            "| reused session, start-up heap frozen | target |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "The read limit shared by all triggers of a loop (64 in flight) bounds a cycle at 50 ms to about",
            "1,280 reads a second: 78 s for 100,000 reads is the floor. An idle loop's ticker",
            "is already late by the figure in brackets (the OS runs other processes), so the wall-clock stall",
            "cannot be told from the loop's own blocking work; the CPU-time row measures that work alone: the CPU",
            "time the loop's thread spent between two ticks, which no other process adds to. A full (generation 2)",
            "garbage collection scans the whole heap of the process and counts as a stall of its length in both rows.",
            "CPython starts one whenever the objects that survived young collections since the last one exceed a",
            "quarter of the old heap, whoever made them: the triggers' reads in flight, the triggerer's own work or",
            "another provider's trigger. Its length is the heap's, mostly the modules Airflow imports: a collection",
            "takes as long once the triggers have ended. The 100 ms target therefore holds for the loop's own work",
            "(the row outside collections) but not for a collection, unless the process freezes its start-up heap",
            "(last column), as Airflow's DAG processor and LocalExecutor do and its triggerer does not.",
        ]
    )


def build_section(
    args: argparse.Namespace, watch: list[dict], baseline: list[dict], idle_ms: float, cycle: list[float], bulk: float
) -> str:
    def median(key: str, runs: list[dict] = watch) -> float:
        return statistics.median(run[key] for run in runs)

    return "\n".join(
        [
            "## Trigger watching 10,000 tasks (`bench/bench_trigger.py`)",
            "",
            f"One `ImageContainsTrigger` (in a fresh child process) watching {args.tasks:,} `image-contains` tasks "
            "that stay `processing` for two cycles; then all but one finish at once, and the last one once the trigger "
            "polls only it. Local server in another child process on loopback, 2 cores shared with other "
            f"work, hook defaults, poll interval {args.poll:.0f} s. Medians of "
            f"{args.repeats} runs ({median('cycles'):.0f} poll cycles each).",
            "",
            "| measure | result | baseline (same run) | target |",
            "|---|---|---|---|",
            f"| peak RSS added while watching | {median('rss_added_mb'):.1f} MB | RSS just before the trigger starts | <= 60 MB |",
            f"| longest event-loop stall (5 ms ticker) | {median('stall_ms'):.1f} ms | {idle_ms:.1f} ms on an idle loop; "
            f"{median('stall_ms', baseline):.1f} ms with a retry object per call ({len(baseline)} runs) | <= 100 ms |",
            f"| garbage collections while watching: full (generation 2) / young, longest pause | "
            f"{median('full_collections'):.0f} / {median('young_collections'):.0f}, "
            f"{median('longest_collection_ms'):.1f} ms | {median('full_collections', baseline):.0f} / "
            f"{median('young_collections', baseline):.0f}, {median('longest_collection_ms', baseline):.1f} ms "
            "with a retry object per call | - |",
            f"| GETs per unfinished task per cycle | {median('gets_per_unfinished'):.3f} | 1 (read each unfinished task once) | <= 1 |",
            f"| last task finished -> trigger event | {median('resume_delay_s'):.2f} s | poll interval {args.poll:.0f} s | within one poll interval |",
            f"| one full cycle of {args.tasks:,} GETs at 50 ms latency | {statistics.median(cycle):.1f} s | "
            f"{bulk:.1f} s for a synchronous `hook.get_tasks` of the same tasks | <= 20 s |",
            "",
            "The resume delay runs from the last task finishing to the trigger's event: the wait until the next",
            "poll plus that poll (polls start every interval, however long a cycle takes).",
            "A full (generation 2) garbage collection scans the whole process heap "
            f"({median('heap_objects'):,.0f} objects here, more in a triggerer) and stalls the",
            "loop for as long. The hook's workers reuse one tenacity retry object each and the trigger records each",
            "answer as it arrives, so reads leave no reference-cycle garbage and few survivors to bring one on. The",
            "baseline runs the same watch with a new retry object per call (as the hook did before): its garbage",
            "brings on full collections, and they are the longest stalls.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--poll", type=float, default=5.0, help="trigger poll interval in seconds")
    parser.add_argument("--baseline-repeats", type=int, default=2)
    parser.add_argument("--watch", metavar="RESULT_FILE", help=argparse.SUPPRESS)  # child process: watch the tasks
    parser.add_argument("--per-call-retry", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--freeze-heap", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print the section without updating docs")
    parser.add_argument(
        "--part", choices=["all", "watch", "triggerer", "triggerer-child"], default="all", help="what to measure"
    )
    parser.add_argument("--triggers", type=int, default=100, help="triggers in the triggerer part")
    parser.add_argument("--tasks-per-trigger", type=int, default=1_000)
    parser.add_argument("--cycles", type=int, default=2, help="full poll cycles per triggerer run")
    args = parser.parse_args()
    if args.part == "triggerer-child":
        result = many_triggers_in_this_process(
            args.triggers, args.tasks_per_trigger, args.cycles, args.per_call_retry, args.freeze_heap
        )
        Path(args.watch).write_text(json.dumps(result))
        return
    if args.watch:
        Path(args.watch).write_text(json.dumps(watch_in_this_process(args.tasks, args.poll, args.per_call_retry)))
        return
    if args.part in ("all", "triggerer"):
        triggerer_part(args)
    if args.part == "triggerer":
        return
    with tempfile.TemporaryDirectory(prefix="bench-trigger-") as tmp:
        db = Path(tmp) / "crowd.db"
        # No simulated workforce: tasks stay processing until the benchmark finishes them.
        with LocalCrowdServer(db, subprocess=True, workforce_size=0) as server:
            use_server(server)
            names = create_tasks(args.tasks)
            idle_ms = idle_stall(2.0)
            watch = []
            for repeat in range(args.repeats):
                watch.append(run_watch(server, db, names, args))
                print(f"watch run {repeat}: {watch[-1]}", flush=True)
            baseline = []
            for repeat in range(args.baseline_repeats):
                baseline.append(run_watch(server, db, names, args, per_call_retry=True))
                print(f"baseline run {repeat} (a retry object per call): {baseline[-1]}", flush=True)
        with LocalCrowdServer(db, subprocess=True, latency_ms=50) as server:
            use_server(server)
            cycle = [full_cycle_seconds(names) for _ in range(args.repeats)]
            bulk = sync_bulk_seconds(names)
            print(f"full cycles at 50 ms: {cycle}; synchronous bulk read: {bulk:.1f} s", flush=True)
    section = build_section(args, watch, baseline, idle_ms, cycle, bulk)
    print(section)
    if not args.no_write:
        write_section(SECTION, section)


if __name__ == "__main__":
    main()
