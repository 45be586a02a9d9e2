"""`make bench`: `mlflow models serve` and Lifecycle on the same registered model, same load.

Starts an embedded tracking server in a scratch directory, trains and registers the iris
model, then serves it side by side with the same number of uvicorn workers: `mlflow models
serve`, `lifecycle serve` (prediction log on PostgreSQL, metrics on), and two constant
endpoints (FastAPI, the ceiling the comparison is stated against, and bare ASGI, uvicorn's own
ceiling). wrk (Debian's, with benchmarks/post.lua) sends the same bodies to each.

The method (docs/benchmarks.md, "Reading the numbers"): every server is warmed up with load
that is not recorded, then rounds alternate between the servers (A B C A B C ...), and each
figure is the median and the best of its rounds; ratios are taken from medians and from bests.
After the 100-row batches the store is checked to hold every row Lifecycle answered. Last, a
hot swap under load: v2 is promoted while wrk runs, and a probe measures the time to the
first answer from v2. Results go to docs/benchmarks.md.

    python -m benchmarks.run [--duration 8] [--rounds 3] [--warmup 3] [--workers 2]
                             [--database-url URL] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from tests.support.services import free_port, stop_process_group, temp_database, wait_http

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "benchmarks" / "post.lua"
MODEL = "bench-iris"
ROW = [5.1, 3.5, 1.4, 0.2]


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]


@contextmanager
def start(
    name: str, cmd: list[str], env: dict[str, str], ready: str, logs: Path, timeout: float = 120
) -> Iterator[Server]:
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{name}.log").open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = ready.rsplit("/", 1)[0]
    try:
        wait_http(ready, timeout, proc)
        yield Server(name, base, proc)
    finally:
        stop_process_group(proc)


def wrk(url: str, path: str, body_file: Path, connections: int, duration: int) -> dict[str, Any]:
    env = {**os.environ, "PATH_": path, "BODY_FILE": str(body_file)}
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(LUA), url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    match = re.search(r"RESULT (.*)", out)
    if not match:
        raise RuntimeError(f"wrk printed no RESULT line:\n{out}")
    values = {k: int(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
    seconds = values["duration_us"] / 1e6
    errors = sum(v for k, v in values.items() if k.startswith("errors_"))
    return {
        "requests": values["requests"],
        "rps": values["requests"] / seconds,
        "p50_ms": values["p50_us"] / 1000,
        "p99_ms": values["p99_us"] / 1000,
        "errors": errors,
        "command": " ".join([*cmd[:-3], str(LUA.relative_to(ROOT)), url + path]),
    }


def hot_swap(
    client: Any, lifecycle: Server, body_file: Path, new_version: str, duration: int
) -> dict[str, Any]:
    """wrk at 32 connections on Lifecycle; a probe watches which version answers."""
    probes: list[tuple[float, int | None, str | None]] = []
    stop = threading.Event()

    def probe() -> None:
        body = body_file.read_bytes()
        with httpx.Client(base_url=lifecycle.url, timeout=10) as http:
            while not stop.is_set():
                try:
                    r = http.post(
                        "/invocations", content=body, headers={"Content-Type": "application/json"}
                    )
                    probes.append(
                        (time.monotonic(), r.status_code, r.headers.get("x-model-version"))
                    )
                except httpx.HTTPError:
                    probes.append((time.monotonic(), None, None))
                time.sleep(0.005)

    result: dict[str, Any] = {}
    load = threading.Thread(
        target=lambda: result.update(wrk(lifecycle.url, "/invocations", body_file, 32, duration))
    )
    watcher = threading.Thread(target=probe)
    load.start()
    watcher.start()
    time.sleep(duration / 3)
    client.transition_model_version_stage(
        MODEL, new_version, "Production", archive_existing_versions=True
    )
    moved = time.monotonic()
    load.join()
    stop.set()
    watcher.join()
    first = next((t for t, s, v in probes if t > moved and s == 200 and v == new_version), None)
    probe_failures = sum(1 for _, s, _ in probes if s != 200)
    return {
        "swap_seconds": None if first is None else first - moved,
        "failed": result["errors"] + probe_failures,
        "requests": result["requests"] + len(probes),
        "rps": result["rps"],
    }


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import fastapi
    import mlflow
    import sklearn
    import uvicorn

    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[
        0
    ]
    return {
        "cpu": f"{cpu} x {os.cpu_count()}",
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": f"mlflow {mlflow.__version__}, scikit-learn {sklearn.__version__}, "
        f"fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__}",
        "wrk": wrk_version.strip(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# Single-row requests at 32 connections, then 100-row batches at 8: (run key, server, path,
# body, connections). Rounds cycle through each phase's runs in this order.
SINGLE = (
    ("mlflow/single/32", "mlflow", "/invocations", "single", 32),
    ("lifecycle/single/32", "lifecycle", "/invocations", "single", 32),
    ("lifecycle-predict/single/32", "lifecycle", "/predict", "reference", 32),
    ("constant/single/32", "constant", "/invocations", "single", 32),
    ("constant-asgi/single/32", "constant-asgi", "/invocations", "single", 32),
)
BATCH = (
    ("mlflow/batch/8", "mlflow", "/invocations", "batch", 8),
    ("lifecycle/batch/8", "lifecycle", "/invocations", "batch", 8),
)
BATCH_ROWS = 100


Run = Callable[[], dict[str, Any]]


def alternate(
    plan: tuple[tuple[str, str, str, str, int], ...],
    servers: dict[str, Server],
    files: dict[str, Path],
    rounds: int,
    duration: int,
    wrap: dict[str, Callable[[Run], dict[str, Any]]] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """`rounds` rounds of every run in `plan`, one after another (A B C A B C ...); a run
    whose key is in `wrap` is measured through it."""
    out: dict[str, list[dict[str, Any]]] = {key: [] for key, *_ in plan}
    for r in range(rounds):
        for key, server, path, body, connections in plan:

            def run(
                url: str = servers[server].url,
                path: str = path,
                body: str = body,
                connections: int = connections,
            ) -> dict[str, Any]:
                return wrk(url, path, files[body], connections, duration)

            result = (wrap or {}).get(key, lambda run: run())(run)
            out[key].append(result)
            print(f"round {r + 1}/{rounds} {key}: {result['rps']:,.0f} req/s", flush=True)
    return out


def summarise(rounds: list[dict[str, Any]], rows: int = 1) -> dict[str, Any]:
    rps = [x["rps"] * rows for x in rounds]
    return {
        "median": statistics.median(rps),
        "best": max(rps),
        "rounds": rps,
        "p99_ms": statistics.median(x["p99_ms"] for x in rounds),
        "errors": sum(x["errors"] for x in rounds),
        "requests": sum(x["requests"] for x in rounds),
        "command": rounds[0]["command"],
    }


def stored_rows(database_url: str) -> int:
    """Rows in the log: plain rows and the predictions chunk rows hold (counted from the
    chunks' sizes, not by expanding them)."""
    engine = sa.create_engine(database_url)
    sql = (
        "SELECT (SELECT count(*) FROM predictions) "
        "+ (SELECT coalesce(sum(n), 0) FROM prediction_chunks)"
    )
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(sql)).scalar_one())
    finally:
        engine.dispose()


def stored_round(database_url: str, run: Run) -> dict[str, Any]:
    """A batch round whose rate also counts the time until every row it answered is in the
    log: stored rows over the round plus the catch-up after it."""
    stored_before = stored_rows(database_url)
    started = time.monotonic()
    result = run()
    answered = (result["requests"] - result["errors"]) * BATCH_ROWS
    stored = wait_stored(database_url, stored_before + answered, poll=0.05) - stored_before
    result["stored_rows"] = stored
    result["stored_rps"] = stored / (time.monotonic() - started)
    return result


def wait_stored(database_url: str, expected: int, timeout: float = 120, poll: float = 0.5) -> int:
    """Rows in the store once it holds `expected` or stops growing for 5 s (then the caller
    reports the shortfall)."""
    deadline = time.monotonic() + timeout
    last, still_since = -1, time.monotonic()
    while True:
        n = stored_rows(database_url)
        if n != last:
            last, still_since = n, time.monotonic()
        if n >= expected or time.monotonic() - still_since >= 5 or time.monotonic() > deadline:
            return n
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8, help="Seconds per recorded round.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternated rounds per server.")
    parser.add_argument("--warmup", type=int, default=3, help="Unrecorded seconds per server.")
    parser.add_argument("--workers", type=int, default=2, help="Workers for every server.")
    parser.add_argument(
        "--database-url",
        help="Lifecycle's prediction store (default: a scratch database on the local "
        "PostgreSQL, as in the tests).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="A short try: 2 rounds of 3 s, 1 s of warm-up."
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.warmup = 3, 2, 1
    if shutil.which("wrk") is None:
        print("error: wrk not found; install it with `apt-get install wrk`", file=sys.stderr)
        return 2
    given = argv if argv is not None else sys.argv[1:]
    argv_text = " ".join(["python -m benchmarks.run", *given])
    with ExitStack() as stack:
        database_url = args.database_url or stack.enter_context(temp_database("lc_bench"))
        results = run(args, database_url)
    results["argv"] = argv_text
    write_section(args.out, render(results))
    print(f"wrote {args.out}")
    return 0


def run(args: argparse.Namespace, database_url: str) -> dict[str, Any]:
    from lifecycle.core import mlflow_gateway
    from lifecycle.core.settings import Settings
    from training.train import TrainRequest, train

    scratch = Path(tempfile.mkdtemp(prefix="lifecycle-bench-"))
    logs = scratch / "logs"
    py = sys.executable
    tracking_port = free_port()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("LIFECYCLE_", "MLFLOW_"))}
    base_env["LIFECYCLE_DATA_DIR"] = str(scratch / "data")
    # `mlflow models serve` execs `uvicorn` through PATH: use this virtualenv's.
    base_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    tracking_env = {**base_env, "LIFECYCLE_TRACKING_PORT": str(tracking_port)}
    tracking_uri = f"http://127.0.0.1:{tracking_port}"
    results: dict[str, Any] = {
        "machine": machine(),
        "workers": args.workers,
        "rounds": args.rounds,
        "duration": args.duration,
        "warmup": args.warmup,
        "store": "PostgreSQL",
    }
    with ExitStack() as stack:
        stack.enter_context(
            start(
                "mlflow-tracking",
                [py, "-m", "lifecycle", "tracking"],
                tracking_env,
                f"{tracking_uri}/health",
                logs,
            )
        )
        settings = Settings(
            tracking_uri=tracking_uri, data_dir=scratch / "data", experiment_name="bench"
        )
        v1 = train(settings, TrainRequest("iris", register=True, model_name=MODEL)).version
        client = mlflow_gateway.connect(settings)
        first = client.get_model_version(MODEL, str(v1))
        import mlflow

        v2 = str(mlflow.register_model(first.source, MODEL).version)
        client.transition_model_version_stage(MODEL, str(v1), "Production")
        names = [
            f["name"] for f in mlflow_gateway.model_metadata(f"models:/{MODEL}/{v1}")["features"]
        ]
        files = {
            "single": scratch / "single.json",
            "reference": scratch / "reference.json",
            "batch": scratch / "batch.json",
        }
        files["single"].write_text(
            json.dumps({"dataframe_split": {"columns": names, "data": [ROW]}})
        )
        files["reference"].write_text(json.dumps({"features": ROW}))
        files["batch"].write_text(
            json.dumps({"dataframe_split": {"columns": names, "data": [ROW] * BATCH_ROWS}})
        )
        env = {**base_env, "MLFLOW_TRACKING_URI": tracking_uri}
        commands = server_commands(py, str(v1), str(args.workers), env, database_url)
        # All servers run for the whole benchmark, so rounds can alternate; an idle server
        # costs next to nothing while another is measured.
        servers = {
            name: stack.enter_context(start(name, cmd, server_env, ready, logs))
            for name, (cmd, server_env, ready) in commands.items()
        }
        for _key, server, path, body, connections in (*SINGLE, *BATCH):
            wrk(servers[server].url, path, files[body], connections, args.warmup)
        single = alternate(SINGLE, servers, files, args.rounds, args.duration)
        before = wait_stored(database_url, 0, timeout=0)
        stored = {"lifecycle/batch/8": lambda run: stored_round(database_url, run)}
        batch = alternate(BATCH, servers, files, args.rounds, args.duration, stored)
        answered = sum(
            (x["requests"] - x["errors"]) * BATCH_ROWS for x in batch["lifecycle/batch/8"]
        )
        after = wait_stored(database_url, before + answered)
        results["stored"] = {"answered": answered, "stored": after - before}
        print(f"store: {after - before:,} rows stored of {answered:,} answered", flush=True)
        stored_rps = [x["stored_rps"] for x in batch["lifecycle/batch/8"]]
        results["stored"]["rps"] = {
            "median": statistics.median(stored_rps),
            "best": max(stored_rps),
        }
        results["runs"] = {
            **{k: summarise(v) for k, v in single.items()},
            **{k: summarise(v, BATCH_ROWS) for k, v in batch.items()},
        }
        results["hot_swap"] = hot_swap(
            client, servers["lifecycle"], files["single"], v2, max(args.duration, 12)
        )
        print("hot swap", results["hot_swap"], flush=True)
    (scratch / "results.json").write_text(json.dumps(results, indent=2))
    print(f"raw results: {scratch / 'results.json'}")
    return results


def server_commands(
    py: str, version: str, workers: str, env: dict[str, str], database_url: str
) -> dict[str, tuple[list[str], dict[str, str], str]]:
    mlflow_port, lifecycle_port = free_port(), free_port()
    constant_port, asgi_port = free_port(), free_port()
    uvicorn_flags = ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]
    uvicorn_flags += ["--log-level", "warning", "--workers", workers]
    return {
        "mlflow": (
            [
                py,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                f"models:/{MODEL}/{version}",
                "-h",
                "127.0.0.1",
                "-p",
                str(mlflow_port),
                "-w",
                workers,
                "--env-manager",
                "local",
            ],
            env,
            f"http://127.0.0.1:{mlflow_port}/ping",
        ),
        "lifecycle": (
            [py, "-m", "lifecycle", "serve", "--port", str(lifecycle_port), "--workers", workers],
            {**env, "LIFECYCLE_MODEL_NAME": MODEL, "LIFECYCLE_DATABASE_URL": database_url},
            f"http://127.0.0.1:{lifecycle_port}/ready",
        ),
        "constant": (
            [
                py,
                "-m",
                "uvicorn",
                "benchmarks.constant_app:app",
                "--port",
                str(constant_port),
                *uvicorn_flags,
            ],
            {**env, "PYTHONPATH": str(ROOT)},
            f"http://127.0.0.1:{constant_port}/health",
        ),
        "constant-asgi": (
            [
                py,
                "-m",
                "uvicorn",
                "benchmarks.constant_app:raw",
                "--port",
                str(asgi_port),
                *uvicorn_flags,
            ],
            {**env, "PYTHONPATH": str(ROOT)},
            f"http://127.0.0.1:{asgi_port}/health",
        ),
    }


def render(r: dict[str, Any]) -> str:
    runs = r["runs"]
    m = r["machine"]

    def cell(key: str) -> str:
        x = runs.get(key)
        if not x:
            return "-"
        return f"{x['median']:,.0f} · best {x['best']:,.0f} · p99 {x['p99_ms']:.1f} ms"

    def ratio(a: str, b: str, fmt: str, unit: str = "") -> str:
        x, y = runs.get(a), runs.get(b)
        if not x or not y:
            return "-"
        medians = format(x["median"] / y["median"], fmt)
        return f"**{medians}{unit}** (bests: {format(x['best'] / y['best'], fmt)}{unit})"

    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m benchmarks.run`); rerun to refresh. Every server",
        f"runs with {r['workers']} uvicorn workers on the same registered model (iris,",
        "LogisticRegression pipeline); Lifecycle with prediction logging (PostgreSQL) and metrics",
        f"on. Each server was warmed up ({r['warmup']} s of load per run, not recorded), then",
        f"{r['rounds']} rounds of {r['duration']} s alternated between the servers; each cell is",
        "the median round, the best round and the median p99.",
        "",
        f"- Machine: {m['cpu']}; {m['os']}; Python {m['python']}",
        f"- Software: {m['versions']}; {m['wrk']}",
        f"- Load average when the run started: {m['load']}",
        f"- Prediction store: {r['store']}",
        f"- Run: `{_redact(r['argv'])}`",
        f"- Generated: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        "## Single-row requests, 32 connections (req/s)",
        "",
        "`/invocations` with the same `dataframe_split` body for every server; Lifecycle's",
        '`/predict` with the reference body `{"features": [...]}`.',
        "",
        "| server | req/s: median · best · p99 |",
        "|---|---|",
        f"| mlflow models serve | {cell('mlflow/single/32')} |",
        f"| Lifecycle `/invocations` | {cell('lifecycle/single/32')} |",
        f"| Lifecycle `/predict` | {cell('lifecycle-predict/single/32')} |",
        f"| constant endpoint (FastAPI) | {cell('constant/single/32')} |",
        f"| constant endpoint (bare ASGI) | {cell('constant-asgi/single/32')} |",
        "",
        "- Lifecycle / mlflow: " + ratio("lifecycle/single/32", "mlflow/single/32", ".1f", "x"),
        "- Lifecycle / constant endpoint (FastAPI): "
        + ratio("lifecycle/single/32", "constant/single/32", ".0%")
        + "; / bare ASGI constant: "
        + ratio("lifecycle/single/32", "constant-asgi/single/32", ".0%"),
        "",
        f"## {BATCH_ROWS}-row batches, 8 connections (rows/s)",
        "",
        "| server | rows/s: median · best · p99 |",
        "|---|---|",
        f"| mlflow models serve | {cell('mlflow/batch/8')} |",
        f"| Lifecycle | {cell('lifecycle/batch/8')} |",
        "",
        "- Lifecycle / mlflow: " + ratio("lifecycle/batch/8", "mlflow/batch/8", ".2f", "x"),
    ]
    stored = r.get("stored")
    if stored:
        lines.append(
            f"- Prediction log: {stored['stored']:,} rows stored of {stored['answered']:,} "
            "answered in the batch rounds (wrk does not count requests still in flight when "
            "a round ends, so the store may hold a few more)."
        )
        rps = stored.get("rps")
        if rps:
            mlflow_rows = r["runs"]["mlflow/batch/8"]
            lines.append(
                f"- Stored rows/s (each Lifecycle round timed until every row it answered is "
                f"in the log): median {rps['median']:,.0f} · best {rps['best']:,.0f}; "
                f"/ mlflow: {rps['median'] / mlflow_rows['median']:.2f}x median, "
                f"{rps['best'] / mlflow_rows['best']:.2f}x best."
            )
    h = r.get("hot_swap")
    if h:
        swap = "not observed" if h["swap_seconds"] is None else f"{h['swap_seconds']:.2f} s"
        lines += [
            "",
            "## Hot swap under load",
            "",
            "wrk at 32 connections on Lifecycle's `/invocations` plus a probe; a third of the way",
            "in, v2 is promoted to Production (poll interval 2 s, the default).",
            "",
            f"- Time from the transition to the first answer from v2: **{swap}**",
            f"- Failed requests: **{h['failed']}** of {h['requests']:,} "
            f"({h['rps']:,.0f} req/s during the swap)",
        ]
    lines += [
        "",
        "## Reading the numbers",
        "",
        "- wrk runs on the same two cores as the servers, and other work on the machine (load",
        "  average above) moves every number: compare servers within one run, by the ratios.",
        "- Alternated rounds after a warm-up: no server is measured cold, and a slow minute of",
        "  the machine falls on every server's rounds rather than on one server's.",
        "- With 2 workers, wrk's burst of keep-alive connections can land unevenly on the",
        "  workers (mlflow's especially); the median over rounds and the best round bound that.",
        "- Lifecycle does more per request than `mlflow models serve`: validation from the",
        "  model's schema, every prediction logged (written to PostgreSQL by a background",
        "  writer on the same cores: a row per single-row request, one chunk row per",
        "  100-row request), Prometheus metrics in multiprocess mode,",
        "  request id and model headers. `/predict` and `/invocations` are served by a plain",
        '  ASGI handler in front of FastAPI (docs/serving.md, "Fast path"), which is why',
        "  the bare-ASGI constant is shown too.",
        "- Hot swap: following a stage is polling, so the swap lands within the poll interval",
        "  plus the load time (about 0.1-0.3 s here); an alias moved with a webhook swaps at once.",
    ]
    lines += ["", "## Commands", "", "```"]
    seen = set()
    for x in runs.values():
        if x["command"] not in seen:
            seen.add(x["command"])
            lines.append(x["command"])
    lines += [
        "mlflow models serve -m models:/bench-iris/1 -w 2 --env-manager local",
        "lifecycle serve --workers 2",
        "uvicorn benchmarks.constant_app:app --workers 2 --loop uvloop --http httptools "
        "--no-access-log",
        "uvicorn benchmarks.constant_app:raw --workers 2 --loop uvloop --http httptools "
        "--no-access-log",
        "```",
        "",
    ]
    return "\n".join(lines)


START, END = "<!-- make bench: start -->", "<!-- make bench: end -->"


def write_section(path: Path, text: str) -> None:
    """Replace only this benchmark's section, so other sections of the page survive a rerun."""
    section = f"{START}\n{text.rstrip()}\n{END}\n"
    old = path.read_text() if path.exists() else ""
    if START in old and END in old:
        head, _, rest = old.partition(START)
        _, _, tail = rest.partition(END)
        path.write_text(head + section + tail.lstrip("\n"))
    elif old.strip():
        path.write_text(old.rstrip() + "\n\n" + section)
    else:
        path.write_text(section)


def _redact(command: str) -> str:
    return re.sub(r"://[^@/\s]*@", "://…@", command)


if __name__ == "__main__":
    sys.exit(main())
