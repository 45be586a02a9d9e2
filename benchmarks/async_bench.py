"""Async scoring benchmark: batch-file memory, and records/s through RabbitMQ.

    python benchmarks/async_bench.py [--rows 1000000] [--tasks 2000] [--seconds 10]

Starts its own stack with the same commands users run: `lifecycle tracking` (SQLite, in a
temporary directory), `lifecycle serve` and `lifecycle worker`, the prediction store on the
PostgreSQL of LIFECYCLE_TEST_POSTGRES_URL (a fresh database) and the broker on a fresh vhost of
LIFECYCLE_TEST_AMQP_URL's RabbitMQ (created with rabbitmqctl). It then measures:

1. a generated CSV of --rows rows through the batch task: time, rows/s and the peak RSS of the
   worker's whole process tree (sampled every 50 ms from /proc);
2. async records/s through RabbitMQ: --tasks single-row tasks (unbatched), the same number
   of records as 100-row tasks (batched), the same two through the plain-AMQP queue, counted
   when they are in the prediction store;
3. the REST path in the same run: `wrk` on /predict with single rows at 32 connections.

Every path is warmed up first, then measured in --rounds alternated rounds (A B C ... A B C
...), and reported as the median and the best round of each. Prints a Markdown table for
docs/benchmarks.md. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import sqlalchemy as sa

from benchmarks.docs_section import write_section

# The same isolation the tests use: a fresh database and a fresh vhost, dropped afterwards.
from lifecycle.cli.supervisor import Supervisor
from tests.support.services import free_port, temp_database, wait_http
from tests.support.worker import rabbit_vhost

ROOT = Path(__file__).resolve().parent.parent
ROW = [5.1, 3.5, 1.4, 0.2]
# Threads sending Celery tasks: each send waits for a ledger commit and a publisher confirm.
SENDERS = 8
MODEL = "iris-classifier"
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents[int(entry.name)] = ppid
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[int(entry.name)] = int(line.split()[1]) * 1024
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += rss.get(current, 0)
        todo.extend(child for child, parent in parents.items() if parent == current)
    return total


class PeakSampler:
    def __init__(self, pid: int, every: float = 0.05) -> None:
        self.pid, self.every, self.peak = pid, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, tree_rss(self.pid))


def write_csv(path: Path, rows: int, chunk: int = 200_000) -> None:
    rng = np.random.default_rng(0)
    with path.open("w") as f:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            values = rng.normal(ROW, 0.8, size=(n, 4)).round(2)
            pd.DataFrame(values, columns=FEATURES).to_csv(f, header=start == 0, index=False)


def stored(engine: sa.Engine, prefix: str, since: datetime) -> int:
    """Rows of one round. The round's time bounds the scan to its own rows (the model-time
    index): a LIKE alone scans every stored row, a million after the batch file, which took
    a core of PostgreSQL away from the stack being measured on every poll."""
    sql = (
        "SELECT count(*) FROM prediction_rows WHERE model_name = :m AND created_at >= :since "
        "AND request_id LIKE :p"
    )
    with engine.connect() as conn:
        params = {"m": MODEL, "since": since, "p": f"{prefix}%"}
        return int(conn.execute(sa.text(sql), params).scalar_one())


def wait_stored(engine: sa.Engine, prefix: str, n: int, timeout: float, since: datetime) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stored(engine, prefix, since) >= n:
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(f"{prefix}: {stored(engine, prefix, since)} of {n} stored")


def round_start() -> datetime:
    """A lower bound for the stored time of a round's rows (a second of slack for clocks)."""
    return datetime.now(UTC) - timedelta(seconds=1)


def celery_throughput(
    app: Any, engine: sa.Engine, tasks: int, per_task: int, senders: int = SENDERS
) -> dict[str, float]:
    """Tasks sent as the API sends them (ledger entry, then a confirmed publish), from
    `senders` threads so that the sending side, which waits on both round trips, keeps the
    queue ahead of the worker; timed until every record is in the store."""
    from serving.worker import SCORE_TASK

    prefix = f"b{per_task}-{uuid.uuid4().hex[:6]}"
    since = round_start()
    body = {"features": ROW} if per_task == 1 else {"instances": [ROW] * per_task}

    failures: list[BaseException] = []

    def send(first: int) -> None:
        try:
            send_every(first)
        except BaseException as exc:  # re-raised by the caller once every sender is done
            failures.append(exc)

    def send_every(first: int) -> None:
        with app.producer_or_acquire() as producer:
            for i in range(first, tasks, senders):
                task_id = f"{prefix}-{i:06d}"
                app.send_task(
                    SCORE_TASK, args=[task_id, body, "async"], task_id=task_id, producer=producer
                )

    # The ledger creates its table on first use: once, before the threads race to it.
    app.task_ledger.known(prefix)
    queue = app.lifecycle_settings.task_queue
    # The worker stops consuming while the tasks are sent, so that what is timed is the
    # worker draining a queue, not the sender (whose rate is reported apart: send_per_s).
    paused = bool(app.control.cancel_consumer(queue, reply=True, timeout=10, limit=1))
    threads = [threading.Thread(target=send, args=(k,)) for k in range(senders)]
    started = send_started = time.monotonic()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sent = time.monotonic()
    finally:
        if paused:
            app.control.add_consumer(queue, reply=True, timeout=10, limit=1)
            started = time.monotonic()
    if failures:
        raise failures[0]
    done = wait_stored(engine, prefix, tasks * per_task, timeout=600, since=since)
    return {
        "tasks": tasks,
        "rows_per_task": per_task,
        "records_per_s": tasks * per_task / (done - started),
        "send_per_s": tasks / (sent - send_started),
        "paused": paused,
        "drain_s": done - started,
    }


def amqp_throughput(
    broker: str, engine: sa.Engine, messages: int, per_msg: int
) -> dict[str, float]:
    from kombu import Connection, Producer, Queue

    prefix = f"q{per_msg}-{uuid.uuid4().hex[:6]}"
    since = round_start()
    started = time.monotonic()
    with Connection(broker) as conn:
        channel = conn.channel()
        Queue("prediction_requests", durable=True)(channel).declare()
        producer = Producer(channel)
        for i in range(messages):
            body: dict[str, Any] = {"request_id": f"{prefix}-{i:06d}"}
            body.update({"features": ROW} if per_msg == 1 else {"instances": [ROW] * per_msg})
            producer.publish(
                json.dumps(body),
                routing_key="prediction_requests",
                content_type="application/json",
                content_encoding="utf-8",
            )
    done = wait_stored(engine, prefix, messages * per_msg, timeout=600, since=since)
    return {
        "messages": messages,
        "rows_per_message": per_msg,
        "records_per_s": messages * per_msg / (done - started),
    }


def rest_throughput(api: str, seconds: int) -> dict[str, float]:
    if shutil.which("wrk") is None:
        return {}
    script = ROOT / "benchmarks" / "_async_bench_post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{json.dumps({'features': ROW})}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    try:
        out = subprocess.run(
            ["wrk", "-t1", "-c32", f"-d{seconds}s", "-s", str(script), f"{api}/predict"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        script.unlink(missing_ok=True)
    rps = next(float(line.split()[1]) for line in out.splitlines() if "Requests/sec" in line)
    return {"records_per_s": rps}


def batch_file(work: Path, args: argparse.Namespace, worker_pid: int, api: str) -> dict[str, Any]:
    csv = work / "big.csv"
    write_csv(csv, args.rows)
    idle = tree_rss(worker_pid)
    with PeakSampler(worker_pid) as sampler, httpx.Client(base_url=api) as client:
        started = time.monotonic()
        task = client.post("/batch", json={"path": str(csv)}).json()["task_id"]
        while True:
            state = client.get(f"/tasks/{task}").json()
            if state["status"] in ("success", "failure"):
                break
            time.sleep(0.5)
        took = time.monotonic() - started
    result = {
        "rows": args.rows,
        "status": state["status"],
        "seconds": took,
        "rows_per_s": args.rows / took,
        "worker_idle_rss_mb": idle / 2**20,
        "worker_peak_rss_mb": sampler.peak / 2**20,
        "csv_mb": csv.stat().st_size / 2**20,
    }
    print(json.dumps(result), flush=True)
    return result


def alternated_rounds(
    args: argparse.Namespace, settings: Any, engine: sa.Engine, broker: str, api: str
) -> dict[str, dict[str, Any]]:
    """Each path warmed up, then measured once per round in turn; median and best of each."""
    from serving.worker import make_celery

    # One client for every round: each app holds its own pooled database connections.
    app = make_celery(settings)
    paths: dict[str, Any] = {
        "celery_unbatched": lambda: celery_throughput(app, engine, args.tasks, 1),
        "celery_batched": lambda: celery_throughput(app, engine, args.tasks // 10, 100),
        "amqp_unbatched": lambda: amqp_throughput(broker, engine, args.tasks, 1),
        "amqp_batched": lambda: amqp_throughput(broker, engine, args.tasks // 10, 100),
    }
    if shutil.which("wrk") is not None:
        paths["rest_single"] = lambda: rest_throughput(api, args.seconds)
    celery_throughput(app, engine, args.warmup, 1)
    amqp_throughput(broker, engine, args.warmup, 1)
    rest_throughput(api, 2)
    figures: dict[str, list[float]] = {key: [] for key in paths}
    for round_no in range(1, args.rounds + 1):
        for key, measure in paths.items():
            figure = measure()
            rate = float(figure["records_per_s"])
            figures[key].append(rate)
            print(f"round {round_no} {key}: {rate:,.0f} records/s {figure}", flush=True)
    return {
        key: {
            "records_per_s": statistics.median(rates),
            "best": max(rates),
            "rounds": rates,
        }
        for key, rates in figures.items()
    }


def start_stack(
    procs: Supervisor, work: Path, db: str, broker: str, extra: dict[str, str]
) -> tuple[dict[str, str], str, subprocess.Popen[bytes]]:
    """The commands users run: `lifecycle tracking`, `train --register`, `promote`,
    `lifecycle worker` and `lifecycle serve`, with the prediction store on `db` and the
    broker on `broker`. Returns the environment, the API's URL and the worker's process;
    waits for neither to be ready."""
    tport, aport = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIFECYCLE_", "MLFLOW_"))}
    env.update(
        LIFECYCLE_DATA_DIR=str(work / "data"),
        LIFECYCLE_TRACKING_PORT=str(tport),
        LIFECYCLE_DATABASE_URL=db,
        LIFECYCLE_BROKER_URL=broker,
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        **extra,
    )
    procs.start("mlflow", [sys.executable, "-m", "lifecycle", "tracking"], env)
    env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{tport}"
    wait_http(f"{env['MLFLOW_TRACKING_URI']}/health", 120)
    for cmd in (
        ["train", "--register"],
        ["promote", "iris-classifier", "1", "--stage", "Production", "--force"],
    ):
        subprocess.run(
            [sys.executable, "-m", "lifecycle", *cmd],
            env=env,
            check=True,
            cwd=ROOT,
            capture_output=True,
        )
    worker = procs.start("worker", [sys.executable, "-m", "lifecycle", "worker"], env).process
    procs.start("api", [sys.executable, "-m", "lifecycle", "serve", "--port", str(aport)], env)
    return env, f"http://127.0.0.1:{aport}", worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds per path")
    parser.add_argument("--warmup", type=int, default=300, help="one-row messages per path")
    parser.add_argument(
        "--worker-concurrency", type=int, help="threads of `lifecycle worker` (its default)"
    )
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    pg = os.environ.get("LIFECYCLE_TEST_POSTGRES_URL")
    amqp = os.environ.get("LIFECYCLE_TEST_AMQP_URL")
    if not pg or not amqp:
        sys.exit("set LIFECYCLE_TEST_POSTGRES_URL and LIFECYCLE_TEST_AMQP_URL (docs/testing.md)")
    sys.path.insert(0, str(ROOT))
    from lifecycle.core.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="lc-async-bench-"))
    procs = Supervisor(work)
    results: dict[str, Any] = {
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    try:
        with temp_database("lc_bench") as db, rabbit_vhost() as broker:
            extra = {"LIFECYCLE_BATCH_CHUNK_ROWS": str(args.chunk_rows)}
            if args.worker_concurrency:
                extra["LIFECYCLE_WORKER_CONCURRENCY"] = str(args.worker_concurrency)
            env, api, worker = start_stack(procs, work, db, broker, extra)
            wait_http(f"{api}/ready", 120)
            time.sleep(3)  # the worker loads the model too
            settings = Settings(
                data_dir=work / "data",
                database_url=db,
                broker_url=broker,
                tracking_uri=env["MLFLOW_TRACKING_URI"],
            )
            engine = sa.create_engine(db)

            if args.rows:
                results["batch"] = batch_file(work, args, worker.pid, api)
            results.update(alternated_rounds(args, settings, engine, broker, api))
            engine.dispose()
    finally:
        procs.stop_all()
    # Logs stay for a failed run (the exception leaves before this line).
    shutil.rmtree(work, ignore_errors=True)
    results["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(json.dumps(results, indent=2))
    section = markdown(results, args)
    print(section)
    if args.write_docs:
        write_docs(ROOT / "docs" / "benchmarks.md", section)


START = "<!-- async-bench:start -->"
END = "<!-- async-bench:end -->"


def markdown(r: dict[str, Any], args: argparse.Namespace) -> str:
    """The "Async scoring" section of docs/benchmarks.md, between its markers."""
    rows = []
    for key, label, unit in (
        ("celery_unbatched", "Celery over RabbitMQ", f"1 row per task ({args.tasks:,} tasks)"),
        ("celery_batched", "Celery over RabbitMQ", f"100 rows per task ({args.tasks // 10:,})"),
        ("amqp_unbatched", "plain AMQP `prediction_requests`", "1 row per message"),
        ("amqp_batched", "plain AMQP `prediction_requests`", "100 rows per message"),
        ("rest_single", "REST `/predict` (wrk -t1 -c32, 1 uvicorn worker)", "1 row per request"),
    ):
        figure = r.get(key, {})
        median, best = figure.get("records_per_s"), figure.get("best")
        cells = [f"{v:,.0f}" if v else "n/a" for v in (median, best)]
        rows.append(f"| {label} | {unit} | {cells[0]} | {cells[1]} |")
    batch: list[str] = []
    if "batch" in r:
        b = r["batch"]
        batch = [
            f"**Batch file, {b['rows']:,} rows** (a generated {b['csv_mb']:.0f} MB iris-like CSV,",
            f"`POST /batch` with its path, chunks of {args.chunk_rows:,} rows, every row stored",
            f"with source `batch`): {b['status']} in {b['seconds']:.0f} s, "
            f"{b['rows_per_s']:,.0f} rows/s.",
            "Peak RSS of the worker's whole process tree (sampled every 50 ms from `/proc`):",
            f"**{b['worker_peak_rss_mb']:.0f} MB**, against {b['worker_idle_rss_mb']:.0f} MB "
            "idle (target: under 500 MB).",
            "",
        ]
    return "\n".join(
        [
            START,
            "## Async scoring",
            "",
            f"`python -m benchmarks.async_bench --rows {args.rows} --tasks {args.tasks} "
            f"--rounds {args.rounds}` (needs",
            "LIFECYCLE_TEST_POSTGRES_URL and LIFECYCLE_TEST_AMQP_URL; `--write-docs` rewrites",
            "this section). It starts its own stack with the commands users run (`lifecycle",
            "tracking` on SQLite, `lifecycle serve`, `lifecycle worker` with its defaults), the",
            "prediction store on a fresh PostgreSQL database and the broker on a fresh RabbitMQ",
            "vhost, and measures every async path beside the REST path in one run: each path",
            f"warmed up ({args.warmup} one-row messages), then {args.rounds} alternated rounds",
            "(A B C D E, A B C D E, ...), median and best round of each.",
            "",
            f"- Machine: {r['machine']}; load average at the start: {r['load']}",
            f"- Generated: {r['generated']}",
            "",
            *batch,
            "**Records per second**, counted when the predictions are in the prediction store",
            "(an async result is acknowledged only once stored):",
            "",
            "| path | unit of work | median records/s | best round |",
            "|---|---|---|---|",
            *rows,
            "",
            "Reading it:",
            "",
            "- One-row messages that arrive together are scored and stored together",
            "  (`serving/micro_batch.py`): one model call over their stacked rows and one store",
            "  transaction per batch, each message still acknowledged only after its own rows",
            "  are committed. Plain AMQP batches up to 128 messages held within 5 ms (prefetch",
            "  window 128). Celery score tasks go from the worker's event loop straight to",
            "  one batching thread (the score task's strategy, `serving/score_strategy.py`),",
            "  which scores them, commits their rows and their result-backend states (one",
            "  upsert) and acknowledges each; the prefetch window widens by up to 128 for the",
            "  messages the batch holds. What stays per task is the broker's delivery, decoding",
            "  and acknowledgement, which 100-row messages amortise. Plain AMQP acknowledges a",
            "  whole batch with one `basic.ack` (multiple) once every message of it is answered.",
            "- A round ends when its rows are counted in the store; the count reads only the",
            "  round's rows (by time, through the model-time index), so polling it takes",
            "  nothing from the stack once the batch file has stored a million rows.",
            "- Celery rows are timed from the moment the worker resumes consuming a queue filled",
            "  while it was paused (`cancel_consumer`), so the figure is the worker's; the",
            "  sending side (ledger entry and confirmed publish per task, 8 threads) is",
            "  reported apart as `send_per_s` in the JSON output.",
            "- Batch files are bound by the prediction-store inserts; scoring a 10,000-row chunk",
            "  takes milliseconds.",
            "- The machine is shared with other test runs when the load average is high: treat",
            "  absolute rates as an order of magnitude, and compare paths within one run.",
            END,
        ]
    )


def write_docs(path: Path, section: str) -> None:
    write_section(path, section, START, END)


if __name__ == "__main__":
    main()
