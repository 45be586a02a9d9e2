"""`make bench`: `mlflow models serve` and Lifecycle on the same registered model, same load.

Starts an embedded tracking server in a scratch directory, trains and registers the iris
model, then serves it three ways with the same number of uvicorn workers: `mlflow models
serve`, `lifecycle serve` (prediction logging and metrics on), and a constant FastAPI
endpoint (the framework ceiling). wrk (Debian's, with benchmarks/post.lua) sends the same
bodies to each. Last, a hot swap under load: v2 is promoted while wrk runs, and a probe
measures the time to the first answer from v2. Results go to docs/benchmarks.md.

    python -m benchmarks.run [--duration 10] [--workers 2] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.support.services import free_port, stop_process_group, wait_http

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="Seconds per wrk run.")
    parser.add_argument("--workers", type=int, default=2, help="Workers for every server.")
    parser.add_argument("--database-url", help="Prediction store (default: SQLite in scratch).")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("error: wrk not found; install it with `apt-get install wrk`", file=sys.stderr)
        return 2

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
        "store": "PostgreSQL" if args.database_url else "SQLite (embedded default)",
        "argv": " ".join(
            ["python -m benchmarks.run", *(argv if argv is not None else sys.argv[1:])]
        ),
    }
    with start(
        "mlflow-tracking",
        [py, "-m", "lifecycle", "tracking"],
        tracking_env,
        f"{tracking_uri}/health",
        logs,
    ):
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
        single = scratch / "single.json"
        single.write_text(json.dumps({"dataframe_split": {"columns": names, "data": [ROW]}}))
        reference = scratch / "reference.json"
        reference.write_text(json.dumps({"features": ROW}))
        batch = scratch / "batch.json"
        batch.write_text(json.dumps({"dataframe_split": {"columns": names, "data": [ROW] * 100}}))

        env = {**base_env, "MLFLOW_TRACKING_URI": tracking_uri}
        w = str(args.workers)
        mlflow_port, lifecycle_port, constant_port = free_port(), free_port(), free_port()
        servers = {
            "mlflow": (
                [
                    py,
                    "-m",
                    "mlflow",
                    "models",
                    "serve",
                    "-m",
                    f"models:/{MODEL}/{v1}",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(mlflow_port),
                    "-w",
                    w,
                    "--env-manager",
                    "local",
                ],
                env,
                f"http://127.0.0.1:{mlflow_port}/ping",
            ),
            "lifecycle": (
                [py, "-m", "lifecycle", "serve", "--port", str(lifecycle_port), "--workers", w],
                {
                    **env,
                    "LIFECYCLE_MODEL_NAME": MODEL,
                    **({"LIFECYCLE_DATABASE_URL": args.database_url} if args.database_url else {}),
                },
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
                    "--workers",
                    w,
                    "--loop",
                    "uvloop",
                    "--http",
                    "httptools",
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                {**env, "PYTHONPATH": str(ROOT)},
                f"http://127.0.0.1:{constant_port}/health",
            ),
        }
        runs: dict[str, dict[str, Any]] = {}
        # One server at a time: they would otherwise compete for the same two cores.
        for name, (cmd, server_env, ready) in servers.items():
            with start(name, cmd, server_env, ready, logs) as server:
                time.sleep(2)
                for c in (1, 8, 32):
                    runs[f"{name}/single/{c}"] = wrk(
                        server.url, "/invocations", single, c, args.duration
                    )
                    print(name, c, runs[f"{name}/single/{c}"], flush=True)
                if name != "constant":
                    b = wrk(server.url, "/invocations", batch, 8, args.duration)
                    b["rows_per_s"] = b["rps"] * 100
                    runs[f"{name}/batch/8"] = b
                if name == "lifecycle":
                    runs["lifecycle-predict/single/32"] = wrk(
                        server.url, "/predict", reference, 32, args.duration
                    )
                    results["hot_swap"] = hot_swap(
                        client, server, single, v2, max(args.duration, 12)
                    )
                    print("hot swap", results["hot_swap"], flush=True)
        results["runs"] = runs
    write_section(args.out, render(results))
    (scratch / "results.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out} (raw: {scratch / 'results.json'})")
    return 0


def render(r: dict[str, Any]) -> str:
    runs = r["runs"]
    m = r["machine"]

    def cell(key: str) -> str:
        x = runs.get(key)
        if not x:
            return "-"
        return f"{x['rps']:,.0f} req/s · p50 {x['p50_ms']:.1f} ms · p99 {x['p99_ms']:.1f} ms"

    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m benchmarks.run`); rerun to refresh. Each server",
        f"runs alone with {r['workers']} uvicorn workers on the same registered model (iris,",
        "LogisticRegression pipeline); Lifecycle with prediction logging and metrics on.",
        "",
        f"- Machine: {m['cpu']}; {m['os']}; Python {m['python']}",
        f"- Software: {m['versions']}; {m['wrk']}",
        f"- Load average when the run started: {m['load']}",
        f"- Prediction store: {r['store']}",
        f"- Run: `{_redact(r['argv'])}`",
        f"- Generated: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        "## Single-row requests (`/invocations`, `dataframe_split`, the same body for all)",
        "",
        "| connections | mlflow models serve | Lifecycle | constant endpoint |",
        "|---:|---|---|---|",
    ]
    for c in (1, 8, 32):
        lines.append(
            f"| {c} | {cell(f'mlflow/single/{c}')} | {cell(f'lifecycle/single/{c}')} "
            f"| {cell(f'constant/single/{c}')} |"
        )
    ml, lc, k = (runs.get(f"{n}/single/32") for n in ("mlflow", "lifecycle", "constant"))
    lines.append("")
    if ml and lc and k:
        lines.append(
            f"At 32 connections Lifecycle serves **{lc['rps'] / ml['rps']:.1f}x** the requests/s "
            f"of `mlflow models serve` (p99 {lc['p99_ms']:.1f} ms vs {ml['p99_ms']:.1f} ms), "
            f"**{lc['rps'] / k['rps']:.0%}** of the constant-endpoint ceiling."
        )
    p = runs.get("lifecycle-predict/single/32")
    if p:
        lines.append(
            "Lifecycle `/predict` with the reference body at 32 connections: "
            f"{cell('lifecycle-predict/single/32')}."
        )
    lines += [
        "",
        "## 100-row batches (8 connections)",
        "",
        "| server | rows/s | p99 |",
        "|---|---:|---:|",
    ]
    for n in ("mlflow", "lifecycle"):
        b = runs.get(f"{n}/batch/8")
        if b:
            lines.append(f"| {n} | {b['rows_per_s']:,.0f} | {b['p99_ms']:.1f} ms |")
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
        "- wrk runs on the same two cores as the server under test, and other work on the",
        "  machine (load average above) moves every number; compare servers within one run.",
        "- Lifecycle does more per request than `mlflow models serve`: validation from the",
        "  model's schema, a prediction-store record per row, Prometheus metrics in multiprocess",
        "  mode, request id and model headers. Its scoring path is the pipeline lowered to numpy",
        "  (docs/serving.md), not pyfunc on a DataFrame.",
        "- 100-row batches: Lifecycle stores 100 records per request; the prediction store's",
        "  writer bounds the sustained rows/s, and once its queue is full rows go to the disk",
        "  spool on the request path (docs/prediction-store.md). `mlflow models serve` logs",
        "  nothing.",
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
