"""Benchmark ImageContainsHook.put_tasks/get_tasks against the reference client, in one run.

For each injected latency (0 ms and 50 ms) a fresh local server runs as a child process. The hook
creates and reads 2,000 tasks; the reference client ``mturk_crowd_beta_client`` (module constants
pointed at the same server, account learned through the same server's STS) loops over the same
kind of tasks. Each figure is the median of several repetitions. Measured in the same run: the
server's own capacity (GETs and PUTs signed in advance, sent by ``bench_server_capacity``'s raw
asyncio client), the design the bulk path replaced (a thread pool of the hook's single ``requests``
calls), the client CPU per request, and the async path's two signers (requests-aws4auth vs botocore
SigV4Auth). Results replace the ``bench:hook`` section of docs/benchmarks.md.

Run: ``.venv/bin/python bench/bench_hook.py [--tasks 2000] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import mturk_crowd_beta_client
from bench_server_capacity import measure, presign
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, RefreshableCredentials
from report import write_section

from airflow_provider_imagecontains.hooks.imagecontains import ImageContainsHook
from imagecontains_gateway.testing import LocalCrowdServer

FUNCTION_NAME = "image-contains"
SECTION = "hook"


def task_input(index: int) -> dict[str, Any]:
    return {"image": {"url": f"https://images.example.com/{index}.jpg"}, "target": {"label": "cat"}}


def timed(call: Callable[[], Any], count: int) -> float:
    """Tasks per second of ``call`` handling ``count`` tasks."""
    start = time.perf_counter()
    call()
    return count / (time.perf_counter() - start)


def cpu_per_call(call: Callable[[], Any], count: int) -> float:
    """Microseconds of this process's CPU per task (robust to other load on the machine)."""
    start = time.process_time()
    call()
    return (time.process_time() - start) / count * 1e6


def measure_hook(hook: ImageContainsHook, prefix: str, count: int) -> tuple[float, float, float]:
    inputs = {f"{prefix}-{i}": task_input(i) for i in range(count)}
    put_rate = timed(lambda: hook.put_tasks(FUNCTION_NAME, inputs), count)
    start = time.process_time()
    get_rate = timed(lambda: hook.get_tasks(FUNCTION_NAME, list(inputs)), count)
    return put_rate, get_rate, (time.process_time() - start) / count * 1e6


def thread_pool_get_tasks(hook: ImageContainsHook, names: list[str]) -> None:
    """The design the bulk path replaced: the hook's single requests calls on a thread pool of the same size."""
    with ThreadPoolExecutor(max_workers=hook.max_concurrency) as pool:
        list(pool.map(lambda name: hook.get_task(FUNCTION_NAME, name), names))


def measure_reference(client: Any, prefix: str, count: int) -> tuple[float, float]:
    names = [f"{prefix}-{i}" for i in range(count)]

    def put_all() -> None:
        for i, name in enumerate(names):
            assert client.put_task(FUNCTION_NAME, name, task_input(i)).status_code == 201

    def get_all() -> None:
        for name in names:
            assert client.get_task(FUNCTION_NAME, name).status_code == 200

    return timed(put_all, count), timed(get_all, count)


def measure_capacity(server: LocalCrowdServer, prefix: str, count: int, connections: int) -> tuple[float, float]:
    """GET and PUT requests/s the server answers when nothing is signed or parsed on the clock (as bench_server_capacity)."""
    body = json.dumps({"input": task_input(0)}).encode()
    gets = [presign(server, "GET", f"{prefix}-{i}", b"") for i in range(count)]
    puts = [presign(server, "PUT", f"{prefix}-cap-{i}", body) for i in range(count)]
    get_rate, get_statuses = asyncio.run(measure(server.port, gets, connections))
    put_rate, put_statuses = asyncio.run(measure(server.port, puts, connections))
    assert set(get_statuses) == {200} and set(put_statuses) == {201}, "unexpected statuses"
    return get_rate, put_rate


def raw_aiohttp_get_rate(server: LocalCrowdServer, names: list[str], concurrency: int) -> float:
    """The transport's ceiling: aiohttp GETs signed before the clock starts, bodies parsed, nothing else."""
    credentials = Credentials(server.account.access_key_id, server.account.secret_access_key)
    base = f"{server.endpoint_url}/{server.account.account_id}/functions/{FUNCTION_NAME}/tasks/"
    signed = {}
    for name in names:
        request = AWSRequest("GET", base + name)
        SigV4Auth(credentials, "crowd", "us-east-1").add_auth(request)
        signed[name] = dict(request.headers)

    async def get_all() -> None:
        semaphore = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

            async def get(name: str) -> None:
                async with semaphore, session.get(base + name, headers=signed[name]) as response:
                    json.loads(await response.read())
                    assert response.status == 200, response.status

            await asyncio.gather(*(get(name) for name in names))

    return timed(lambda: asyncio.run(get_all()), len(names))


def signing_cost(hook: ImageContainsHook, rounds: int = 3000) -> dict[str, float]:
    """Microseconds per PUT signature on the async path: requests-aws4auth (chosen) vs botocore SigV4Auth."""
    credentials = RefreshableCredentials.create_from_metadata(
        metadata={
            "access_key": "ASIABENCHMARK",
            "secret_key": "s" * 40,
            "token": "t" * 400,
            "expiry_time": (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).isoformat(),
        },
        refresh_using=lambda: {},
        method="bench",
    )
    url = f"{hook.config.endpoint_url}/123456789012/functions/{FUNCTION_NAME}/tasks/bench-task"
    body = json.dumps({"input": task_input(0)}).encode()

    def aws4auth() -> None:
        hook._signed_headers("PUT", url, body, credentials.get_frozen_credentials())

    def botocore_sigv4() -> None:
        request = AWSRequest("PUT", url, data=body, headers={"Content-Type": "application/json"})
        SigV4Auth(credentials.get_frozen_credentials(), "crowd", hook.config.region_name).add_auth(request)
        dict(request.headers)

    def median_cost(sign: Callable[[], None]) -> float:
        return statistics.median(cpu_per_call(lambda: [sign() for _ in range(rounds)], rounds) for _ in range(5))

    return {"aws4auth": median_cost(aws4auth), "botocore": median_cost(botocore_sigv4)}


def run_latency(latency_ms: int, count: int, reference_count: int, repeats: int, db_dir: Path) -> dict[str, Any]:
    with LocalCrowdServer(
        db_dir / f"bench-{latency_ms}.db", subprocess=True, workforce_size=0, latency_ms=latency_ms
    ) as server:
        os.environ.update(server.airflow_connection_env("imagecontains_bench"))
        os.environ["AWS_ENDPOINT_URL_STS"] = server.endpoint_url  # the reference client's STS call
        mturk_crowd_beta_client._HOST = server.endpoint_url.removeprefix("http://")
        mturk_crowd_beta_client._ENDPOINT = server.endpoint_url
        hook = ImageContainsHook("imagecontains_bench")
        reference = mturk_crowd_beta_client.MTurkCrowdClient(
            boto3.Session(
                aws_access_key_id=server.account.access_key_id,
                aws_secret_access_key=server.account.secret_access_key,
                region_name="us-east-1",
            )
        )
        names = [f"h{latency_ms}-0-{i}" for i in range(count)]
        # One round measures every candidate in turn, so that load from outside the benchmark hits them alike.
        rounds = []
        for r in range(repeats):
            hook_put, hook_get, hook_get_cpu = measure_hook(hook, f"h{latency_ms}-{r}", count)
            ref_put, ref_get = measure_reference(reference, f"r{latency_ms}-{r}", reference_count)
            start = time.process_time()
            pool_rate = timed(lambda: thread_pool_get_tasks(hook, names), count)
            one_round = {
                "hook_put": hook_put,
                "hook_get": hook_get,
                "hook_get_cpu_us": hook_get_cpu,
                "ref_put": ref_put,
                "ref_get": ref_get,
                "thread_pool": pool_rate,
                "thread_pool_cpu_us": (time.process_time() - start) / count * 1e6,
                "async_aiohttp": timed(lambda: asyncio.run(hook.aget_tasks(FUNCTION_NAME, names)), count),
            }
            if latency_ms == 0:
                one_round["capacity_get"], one_round["capacity_put"] = measure_capacity(
                    server, f"h{latency_ms}-{r}", count, hook.max_concurrency
                )
                one_round["raw_aiohttp_get"] = raw_aiohttp_get_rate(server, names, hook.max_concurrency)
            rounds.append(one_round)
        result: dict[str, Any] = {
            "latency_ms": latency_ms,
            "reference_count": reference_count,
            **{key: statistics.median(one_round[key] for one_round in rounds) for key in rounds[0]},
        }
        if latency_ms == 0:
            result["signing_us"] = signing_cost(hook)
        hook.close()
        return result


def render(results: list[dict[str, Any]], count: int, repeats: int, concurrency: int, load: float) -> str:
    lines = [
        "## Hook: put_tasks / get_tasks vs the reference client",
        "",
        f"`bench/bench_hook.py`, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores shared by client and server "
        f"(load average {load:.1f} at the end of the run: other work on the machine lowers every figure); "
        f"local server as a child process (no workforce), hook `max_concurrency={concurrency}`; {count} tasks per "
        f"hook run; medians of {repeats} repetitions, tasks/s. The bulk methods run on the hook's asyncio core "
        "(aiohttp, requests-aws4auth). The reference client (`mturk-crowd-beta-client` 1.0.0) loops over the tasks "
        "one by one.",
        "",
        "| latency | hook put_tasks | hook get_tasks | reference put | reference get | put ratio | get ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['latency_ms']} ms | {r['hook_put']:.0f} | {r['hook_get']:.0f} | {r['ref_put']:.1f} "
            f"| {r['ref_get']:.1f} | {r['hook_put'] / r['ref_put']:.1f}x | {r['hook_get'] / r['ref_get']:.1f}x |"
        )
    lines.append("")
    for r in results:
        if r["reference_count"] != count:
            lines.append(
                f"- At {r['latency_ms']} ms the reference client ran {r['reference_count']} tasks per repetition "
                "(its sequential loop is slow); its rate does not depend on the count."
            )
        if "capacity_get" in r:
            lines.append(
                f"- Server capacity at 0 ms, same run (requests signed in advance, raw asyncio client, {concurrency} "
                f"keep-alive connections, as `bench_server_capacity.py`): {r['capacity_get']:.0f} GET/s and "
                f"{r['capacity_put']:.0f} PUT/s. Hook get_tasks reaches {100 * r['hook_get'] / r['capacity_get']:.0f}% "
                f"and put_tasks {100 * r['hook_put'] / r['capacity_put']:.0f}% of it (target: at least 80%). "
                f"The transport alone (aiohttp, GETs signed in advance, nothing else) reaches {r['raw_aiohttp_get']:.0f} "
                f"GET/s ({100 * r['raw_aiohttp_get'] / r['capacity_get']:.0f}%); the hook gets "
                f"{100 * r['hook_get'] / r['raw_aiohttp_get']:.0f}% of that."
            )
            lines.append(
                f"- Async-path signer, CPU per PUT signature: requests-aws4auth {r['signing_us']['aws4auth']:.0f} µs "
                f"(signing key kept while the credentials last) vs botocore SigV4Auth {r['signing_us']['botocore']:.0f} µs "
                "(derives the key on every request); requests-aws4auth is used on both paths."
            )
        lines.append(
            f"- At {r['latency_ms']} ms, {count} GETs: asyncio core {r['hook_get']:.0f} tasks/s "
            f"({r['hook_get_cpu_us']:.0f} µs client CPU per task; `aget_tasks` {r['async_aiohttp']:.0f} tasks/s) vs "
            f"the replaced thread pool of `requests` calls {r['thread_pool']:.0f} tasks/s "
            f"({r['thread_pool_cpu_us']:.0f} µs CPU per task): {r['hook_get'] / r['thread_pool']:.1f}x."
        )
    lines.extend(target_lines(results))
    return "\n".join(lines)


def target_lines(results: list[dict[str, Any]]) -> list[str]:
    """Say whether issue 3's targets are met, and by how much they are missed."""
    lines = ["", "Targets (issue 3):", ""]
    for r in results:
        if r["latency_ms"] == 50:
            ratios = {"put": r["hook_put"] / r["ref_put"], "get": r["hook_get"] / r["ref_get"]}
            for kind, ratio in ratios.items():
                verdict = "met" if ratio >= 25 else f"missed by {25 - ratio:.1f}x"
                lines.append(f"- 50 ms, {kind}: {ratio:.1f}x the reference client (target 25x): {verdict}.")
        if "capacity_get" in r:
            shares = {"get": r["hook_get"] / r["capacity_get"], "put": r["hook_put"] / r["capacity_put"]}
            for kind, share in shares.items():
                verdict = "met" if share >= 0.8 else f"missed by {100 * (0.8 - share):.0f} points"
                lines.append(f"- 0 ms, {kind}: {100 * share:.0f}% of the server's capacity (target 80%): {verdict}.")
    if any(
        "capacity_get" in r and min(r["hook_get"] / r["capacity_get"], r["hook_put"] / r["capacity_put"]) < 0.8
        for r in results
    ):
        lines.append(
            "- Why 0 ms falls short: client and server share the 2 cores. The capacity client sends bytes signed "
            "before the clock starts and parses nothing, while the hook spends its client CPU per task (above: "
            "aiohttp's request and response handling, most of it, as the transport-alone figure shows, then SigV4 "
            "signing, the retry wrapper and the task-document check) on the same cores the server needs; GETs, the "
            "server's cheapest request, show it most. Load from other processes widens the gap."
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--reference-tasks-at-no-latency", type=int, default=1000)
    parser.add_argument("--reference-tasks-at-latency", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print the section without updating docs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hook-") as db_dir:
        results = [
            run_latency(0, args.tasks, args.reference_tasks_at_no_latency, args.repeats, Path(db_dir)),
            run_latency(50, args.tasks, args.reference_tasks_at_latency, args.repeats, Path(db_dir)),
        ]
    section = render(results, args.tasks, args.repeats, ImageContainsHook().max_concurrency, os.getloadavg()[0])
    print(section)
    print(json.dumps(results, indent=1))
    if not args.no_write:
        write_section(SECTION, section)


if __name__ == "__main__":
    main()
