"""A 1,000,000-row file through `POST /batch`, as CSV and as Parquet, on a real stack.

    python -m benchmarks.batch_file [--rows 1000000] [--rounds 3] [--chunk-rows N] [--write-docs]

Starts its own stack with the commands users run (`lifecycle tracking` on SQLite in a temporary
directory, `lifecycle serve`, `lifecycle worker`), the prediction store on a fresh database of
LIFECYCLE_TEST_POSTGRES_URL's PostgreSQL and the broker on a fresh vhost of
LIFECYCLE_TEST_AMQP_URL's RabbitMQ. It generates an iris-like file of --rows rows as CSV and as
Parquet, sends each by path to /batch and times it from the POST to the task's success, then
checks that every row is stored exactly once (the table is emptied before each run). Beside
them, the same CSV goes in chunks to `mlflow models serve`'s /invocations (same version,
scoring only, nothing stored). A warm-up run of each comes first; the timed rounds alternate
the order (CSV, Parquet, mlflow, then mlflow, Parquet, CSV, ...). Reported: seconds and
rows/s, median and best of each, and the worker's peak memory (VmHWM of its processes,
reset before each run). Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
import sqlalchemy as sa

from benchmarks.async_bench import start_stack, tree_rss, write_csv
from benchmarks.docs_section import write_section
from lifecycle.cli.supervisor import Supervisor
from tests.support.services import free_port, temp_database, wait_http
from tests.support.worker import rabbit_vhost

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
START = "<!-- batch-file:start -->"
END = "<!-- batch-file:end -->"
FORMATS = ("csv", "parquet")
KINDS = (*FORMATS, "mlflow")


@dataclass(frozen=True)
class Run:
    fmt: str
    seconds: float
    peak_mb: float


def _tree(pid: int) -> list[int]:
    """A process and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def reset_peaks(pid: int) -> bool:
    """Restart the kernel's peak-RSS count (VmHWM) of the worker's processes; False when
    this user may not (the peak is then the worker's lifetime peak)."""
    try:
        for member in _tree(pid):
            Path(f"/proc/{member}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss(pid: int) -> float:
    """MB: the sum of VmHWM over the worker's processes (its peak, as the kernel counts it,
    without sampling; the sum bounds the tree's peak from above)."""
    total = 0
    for member in _tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) * 1024
    return total / 2**20


def run_file(api: str, engine: sa.Engine, path: Path, rows: int, worker_pid: int) -> Run:
    """One file through /batch into an emptied table; every row must be stored once."""
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE predictions, prediction_chunks"))
    reset_peaks(worker_pid)
    with httpx.Client(base_url=api) as client:
        started = time.monotonic()
        task = client.post("/batch", json={"path": str(path)}).json()["task_id"]
        while True:
            state = client.get(f"/tasks/{task}").json()
            if state["status"] in ("success", "failure"):
                break
            time.sleep(0.05)
        took = time.monotonic() - started
    if state["status"] != "success":
        raise RuntimeError(f"{path.name}: {state}")
    with engine.connect() as conn:
        stored, distinct = conn.execute(
            sa.text("SELECT count(*), count(DISTINCT request_id) FROM prediction_rows")
        ).one()
    if stored != rows or distinct != rows:
        raise RuntimeError(f"{path.name}: {stored} rows stored ({distinct} ids) for {rows}")
    fmt = path.suffix.lstrip(".")
    peak = peak_rss(worker_pid)
    print(f"{fmt:8s} {took:7.2f} s {rows / took:10,.0f} rows/s peak {peak:.0f} MB", flush=True)
    return Run(fmt, took, peak)


def run_mlflow(url: str, path: Path, rows: int, chunk: int, out: Path) -> Run:
    """The same CSV through `mlflow models serve`'s /invocations, `chunk` rows per request
    (text/csv), predictions written to `out`: scoring only, nothing stored."""
    started = time.monotonic()
    done = 0
    with httpx.Client(base_url=url, timeout=300) as client, out.open("w") as sink:
        for frame in pd.read_csv(path, chunksize=chunk):
            answer = client.post(
                "/invocations",
                content=frame.to_csv(index=False),
                headers={"content-type": "text/csv"},
            )
            answer.raise_for_status()
            predictions = answer.json()["predictions"]
            frame.assign(prediction=predictions).to_csv(sink, header=done == 0, index=False)
            done += len(frame)
    took = time.monotonic() - started
    if done != rows:
        raise RuntimeError(f"mlflow scored {done} rows of {rows}")
    print(f"{'mlflow':8s} {took:7.2f} s {rows / took:10,.0f} rows/s", flush=True)
    return Run("mlflow", took, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each format")
    parser.add_argument("--chunk-rows", type=int, help="LIFECYCLE_BATCH_CHUNK_ROWS for the worker")
    parser.add_argument(
        "--chunks", action="store_true", help="LIFECYCLE_PREDICTION_CHUNKS=true for the worker"
    )
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    if not os.environ.get("LIFECYCLE_TEST_POSTGRES_URL") or not os.environ.get(
        "LIFECYCLE_TEST_AMQP_URL"
    ):
        sys.exit("set LIFECYCLE_TEST_POSTGRES_URL and LIFECYCLE_TEST_AMQP_URL (docs/testing.md)")
    work = Path(tempfile.mkdtemp(prefix="lc-batch-bench-"))
    procs = Supervisor(work)
    runs: list[Run] = []
    load = os.getloadavg()[0]
    try:
        with temp_database("lc_batch_bench") as db, rabbit_vhost() as broker:
            extra = {}
            if args.chunk_rows:
                extra["LIFECYCLE_BATCH_CHUNK_ROWS"] = str(args.chunk_rows)
            if args.chunks:
                extra["LIFECYCLE_PREDICTION_CHUNKS"] = "true"
            env, api, worker = start_stack(procs, work, db, broker, extra)
            mport = free_port()
            # `mlflow models serve` execs uvicorn through PATH: this virtualenv's.
            mlflow_env = {**env, "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"}
            serve = ["models", "serve", "-m", "models:/iris-classifier/1", "-p", str(mport)]
            procs.start(
                "mlflow-serve",
                [sys.executable, "-m", "mlflow", *serve, "-w", "2", "--env-manager", "local"],
                mlflow_env,
            )
            wait_http(f"{api}/ready", 120)
            wait_http(f"http://127.0.0.1:{mport}/ping", 120)
            files = {"csv": work / "iris.csv", "parquet": work / "iris.parquet"}
            write_csv(files["csv"], args.rows)
            pd.read_csv(files["csv"]).to_parquet(files["parquet"], index=False)
            engine = sa.create_engine(db)
            idle_mb = tree_rss(worker.pid) / 2**20
            mlflow_url, chunk = f"http://127.0.0.1:{mport}", args.chunk_rows or 10_000

            def one(kind: str) -> Run:
                if kind == "mlflow":
                    out = work / "mlflow.scored.csv"
                    return run_mlflow(mlflow_url, files["csv"], args.rows, chunk, out)
                return run_file(api, engine, files[kind], args.rows, worker.pid)

            try:
                for kind in KINDS:  # warm-up: model loaded, connections, caches
                    one(kind)
                for round_ in range(args.rounds):
                    for kind in KINDS if round_ % 2 == 0 else KINDS[::-1]:
                        runs.append(one(kind))
            finally:
                engine.dispose()
            sizes = {fmt: path.stat().st_size / 2**20 for fmt, path in files.items()}
    finally:
        procs.stop_all()
    shutil.rmtree(work, ignore_errors=True)
    section = markdown(runs, args, idle_mb, sizes, load)
    print(section)
    if args.write_docs:
        write_section(DOCS, section, START, END)


def markdown(
    runs: list[Run],
    args: argparse.Namespace,
    idle_mb: float,
    sizes: dict[str, float],
    load: float,
) -> str:
    """The "Batch files" section of docs/benchmarks.md, between its markers."""
    table = []
    names = {
        "csv": f"`/batch`, CSV ({sizes['csv']:.0f} MB)",
        "parquet": f"`/batch`, Parquet ({sizes['parquet']:.0f} MB)",
        "mlflow": "`mlflow models serve -w 2`, the CSV to /invocations in chunks, not stored",
    }
    for kind in KINDS:
        seconds = [r.seconds for r in runs if r.fmt == kind]
        peak = max(r.peak_mb for r in runs if r.fmt == kind)
        median, best = statistics.median(seconds), min(seconds)
        table.append(
            f"| {names[kind]} | {median:.1f} s ({args.rows / median:,.0f} rows/s) "
            f"| {best:.1f} s ({args.rows / best:,.0f} rows/s) "
            f"| {f'{peak:.0f} MB' if kind != 'mlflow' else 'n/a'} |"
        )
    chunk = f" --chunk-rows {args.chunk_rows}" if args.chunk_rows else ""
    chunk += " --chunks" if args.chunks else ""
    settings = "LIFECYCLE_PREDICTION_CHUNKS=true" if args.chunks else "default settings"
    return "\n".join(
        [
            START,
            "## Batch files through /batch",
            "",
            f"`python -m benchmarks.batch_file --rows {args.rows} --rounds {args.rounds}{chunk}`:",
            f"an iris-like file of {args.rows:,} rows sent by path to `POST /batch`, timed from",
            "the POST to the task's success, on a stack of `lifecycle serve` and `lifecycle",
            f"worker` ({settings}) with the prediction store on PostgreSQL, every row",
            "checked stored exactly once into an emptied table; a warm-up run of each format,",
            "then the formats in alternating order",
            f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
            f"{os.cpu_count()} cores, load {load:.1f} at the start).",
            "",
            "| path | median | best | worker peak RSS |",
            "|---|---|---|---|",
            *table,
            "",
            f"The worker's process tree holds {idle_mb:.0f} MB idle (model, libraries); the peak",
            "is the kernel's VmHWM of the worker's processes, reset before each run. The",
            "worker and PostgreSQL share the machine's cores: the file is read, scored and",
            "formatted in the worker while the previous chunk is stored, so the end-to-end",
            "time is close to the slower of the two.",
            "The mlflow row is the same CSV sent by a client in chunks of the worker's chunk",
            "size to `/invocations` of the same registered version (the client reads the file",
            "with pandas and writes the predictions to a CSV); it stores no prediction, so it",
            "is the scoring-only reference, not a like-for-like path.",
            END,
        ]
    )


if __name__ == "__main__":
    main()
