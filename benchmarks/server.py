"""`routoo serve` under load, against calling the upstream directly and against LiteLLM's proxy.

One run, on loopback only: a fake OpenAI upstream (tests/fake_openai.py's answers, served by uvicorn
in its own process) behind (a) nothing, (b) `routoo serve` with a two-model pool and 8 keys on small
budgets, (c) LiteLLM's proxy (`litellm[proxy]` in a venv of its own, its pins clash with ours) with the same two
upstream models. Each gets the same load: 100 requests one at a time (half streaming; the latency a
server adds when it is idle), then REQUESTS requests sent at once (half streaming; a tenth of the
streams abandoned after their first event), spread over the keys. Reported per target: latency
p50/p99 (whole answer) and what it adds to the direct call's, requests/s, status codes, peak RSS of
the server process; for Routoo also each key's spending against its budget (overshoot, which must be
at most one call's cost) and the USD still held after the load (leaked holds, which must be 0).

    python3 -m venv .venv-litellm && .venv-litellm/bin/pip install 'litellm[proxy]'
    python benchmarks/server.py [--requests 1000] [--litellm .venv-litellm/bin/litellm] [--json benchmarks/results/server.json]

Without ``--litellm`` the ``litellm`` found on PATH is used; with none, (c) is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEYS = 8
BUDGET_USD = 0.002  # per key: about 50 answers' worth, while 125 requests come per key
WARM_UP = 8  # sequential requests before each load, on a key of their own
SEQUENTIAL = 100  # then one at a time (half streaming), for the latency a server adds when it is not loaded
MAX_TOKENS = 64  # what each request asks for, so the worst case held per call is small
POOL = [  # names, prices (USD per 1M tokens) and the bundled models they are predicted like
    {"name": "strong", "price_in_per_mtok": 3.0, "price_out_per_mtok": 15.0, "prior_like": "Meta-Llama-3_1-70B-Instruct"},
    {"name": "cheap", "price_in_per_mtok": 0.15, "price_out_per_mtok": 0.6, "prior_like": "Meta-Llama-3_1-8B-Instruct"},
]
PROMPTS = ["What is the capital of France?", "Solve 3x + 5 = 11.", "Write a haiku about routers.",
           "Explain the derivative of x^3.", "Who wrote Hamlet?", "Summarise the plot of Moby Dick in one line."]


# ----- the fake upstream (its own process)
def upstream_app():
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from tests.fake_openai import FakeOpenAI

    fake = FakeOpenAI(reply="Paris is the capital of France, and it has been for a very long time.")

    async def chat(request: Request) -> Response:
        body = await request.body()
        fake.requests.clear()  # the fake keeps every body; a benchmark sends many
        answer = fake.handle(httpx.Request("POST", str(request.url), content=body))
        return Response(answer.content, status_code=answer.status_code, headers={"content-type": answer.headers["content-type"]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(command: list[str], url: str, env: dict | None = None, timeout_s: float = 300) -> subprocess.Popen:
    log = open(Path(tempfile.gettempdir()) / f"bench-server-{Path(command[0]).name}-{int(time.time())}.log", "w")
    process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[:3]} exited with {process.returncode}; see {log.name}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"{command[:3]} did not answer {url} within {timeout_s} s; see {log.name}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


class PeakRSS:
    """The peak resident memory of a process and its children, sampled every 0.1 s."""

    def __init__(self, pid: int):
        self.process, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                processes = [self.process, *self.process.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in processes))
            except psutil.Error:
                pass
            time.sleep(0.1)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# ----- the load
async def one(client: httpx.AsyncClient, url: str, key: str, model: str, i: int) -> dict:
    stream, abandon = i % 2 == 1, i % 20 == 1
    body = {"model": model, "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "max_tokens": MAX_TOKENS}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    started = time.perf_counter()
    headers = {"authorization": f"Bearer {key}"}
    try:
        async with client.stream("POST", url, json=body, headers=headers) as response:
            async for line in response.aiter_lines():
                if abandon and line.startswith("data:"):
                    break  # the client goes away after the first event
            status = response.status_code
    except httpx.HTTPError as error:
        return {"status": type(error).__name__, "seconds": time.perf_counter() - started, "stream": stream, "abandoned": abandon}
    return {"status": status, "seconds": time.perf_counter() - started, "stream": stream, "abandoned": abandon}


async def load(url: str, keys: list[str], model: str, requests: int, free_key: str,
               between: Callable[[], None] = lambda: None) -> tuple[list[dict], list[dict], float]:
    """(one-at-a-time results, at-once results, wall seconds of the latter): a few warm-up requests and
    ``SEQUENTIAL`` one at a time on ``free_key`` (no budget), ``between()``, then ``requests`` at once over ``keys``."""
    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=requests)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(600.0)) as client:
        for i in range(WARM_UP):
            await one(client, url, free_key, model, i)
        alone = [await one(client, url, free_key, model, 2 * i) for i in range(SEQUENTIAL // 2)]  # whole answers
        alone += [await one(client, url, free_key, model, 2 * i + 3) for i in range(SEQUENTIAL // 2)]  # full streams
        between()
        started = time.perf_counter()
        results = await asyncio.gather(*(one(client, url, keys[i % len(keys)], model, i) for i in range(requests)))
        return alone, list(results), time.perf_counter() - started


def percentiles(results: list[dict]) -> tuple[float | None, float | None]:
    done = [r["seconds"] for r in results if r["status"] == 200 and not r["abandoned"]]
    if not done:
        return None, None
    return 1000 * float(np.percentile(done, 50)), 1000 * float(np.percentile(done, 99))


def summary(alone: list[dict], results: list[dict], wall_s: float, rss: int | None) -> dict:
    statuses: dict[str, int] = {}
    for r in results:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    (p50, p99), (alone_p50, alone_p99) = percentiles(results), percentiles(alone)
    return {"requests": len(results), "statuses": statuses, "wall_s": wall_s, "requests_per_s": len(results) / wall_s,
            "p50_ms": p50, "p99_ms": p99, "alone_p50_ms": alone_p50, "alone_p99_ms": alone_p99,
            "peak_rss_mb": rss / 2**20 if rss is not None else None}


def metric(text: str, name: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(rf'^{name}{{key="([^"]+)"}} (\S+)$', text, re.M)}


def histogram_mean(text: str, name: str) -> float:
    """The mean of a Prometheus histogram in seconds, from its _sum and _count lines."""
    total, count = (float(re.search(rf"^{name}_{part} (\S+)$", text, re.M).group(1)) for part in ("sum", "count"))
    return total / count


def run(requests: int, litellm: Path | None) -> dict:
    from routoo_shared.routing.pool import ModelSpec
    from routoo_shared.server.keys import add_key

    folder = Path(tempfile.mkdtemp(prefix="routoo-bench-"))
    up_port = free_port()
    upstream = start([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); import uvicorn; "
                      f"from benchmarks.server import upstream_app; uvicorn.run(upstream_app(), host='127.0.0.1', "
                      f"port={up_port}, log_level='warning')"], f"http://127.0.0.1:{up_port}/v1/chat/completions")
    base = f"http://127.0.0.1:{up_port}/v1"
    report: dict = {"requests": requests, "keys": KEYS, "budget_usd_per_key": BUDGET_USD, "max_tokens": MAX_TOKENS}
    try:
        report["direct"] = summary(*asyncio.run(load(f"{base}/chat/completions", ["none"], "strong", requests, "none")), None)
        print("direct", report["direct"], flush=True)

        config = folder / "routoo.yaml"
        pool = [{**m, "context_window": 16384, "openai_compatible": {"base_url": base}} for m in POOL]
        # attempts may take as long as LiteLLM's default allows: queueing in an overloaded server is not an upstream timeout
        config.write_text(yaml.safe_dump({"pool": pool, "settings": {"timeout_s": 600}}))
        keys = [add_key(config, f"key{i}", budget_usd=BUDGET_USD) for i in range(KEYS)]
        free_key = add_key(config, "unbudgeted")
        port = free_port()
        server = start([sys.executable, "-m", "routoo_shared.cli", "serve", "--config", str(config), "--port", str(port)],
                       f"http://127.0.0.1:{port}/health", {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        try:
            with PeakRSS(server.pid) as rss:
                alone_metrics = []
                measured = asyncio.run(load(f"http://127.0.0.1:{port}/v1/chat/completions", keys, "routoo", requests, free_key,
                                            lambda: alone_metrics.append(httpx.get(f"http://127.0.0.1:{port}/metrics").text)))
            time.sleep(1.0)  # abandoned streams settle as the server notices the closed sockets
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        finally:
            stop(server)
        report["routoo"] = summary(*measured, rss.peak)
        spent, total = metric(metrics, "routoo_key_budget_spent_usd"), metric(metrics, "routoo_key_budget_total_usd")
        held = metric(metrics, "routoo_key_budget_reserved_usd")
        fake_usage = (11, 7)  # tests/fake_openai.py's usage on every answer
        one_call = max(ModelSpec(**m, context_window=16384).cost(*fake_usage) for m in POOL)
        report["routoo"].update(
            spent_usd_per_key=spent, overshoot_usd_per_key={k: max(spent[k] - total[k], 0.0) for k in spent},
            one_call_usd=one_call, leaked_holds_usd=sum(held.values()),
            alone_routing_mean_ms=1000 * histogram_mean(alone_metrics[0], "routoo_routing_seconds"),
        )
        print("routoo", report["routoo"], flush=True)

        if litellm is not None and litellm.exists():
            report["litellm"] = run_litellm(litellm, base, folder, requests)
            print("litellm", report["litellm"], flush=True)
        else:
            report["litellm"] = {"skipped": f"no LiteLLM proxy at {litellm}"}
    finally:
        stop(upstream)
    for target in ("routoo", "litellm"):
        for key in ("p50_ms", "p99_ms", "alone_p50_ms", "alone_p99_ms"):
            if report[target].get(key) is not None:
                report[target][f"added_{key}"] = report[target][key] - report["direct"][key]
    return report


def run_litellm(litellm: Path, base: str, folder: Path, requests: int) -> dict:
    """LiteLLM's proxy over the same two upstream models (one model group, its default shuffle), with
    its master key only: its virtual keys and their budgets need a PostgreSQL database and Prisma,
    whose engine binaries are downloaded at first use (not possible offline)."""
    master = "sk-bench-master"
    config = folder / "litellm.yaml"
    config.write_text(yaml.safe_dump({
        "model_list": [{"model_name": "bench", "litellm_params": {"model": f"openai/{m['name']}", "api_base": base,
                                                                  "api_key": "none"}} for m in POOL],
        "general_settings": {"master_key": master},
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }))
    port = free_port()
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "DISABLE_SCHEMA_UPDATE": "True"}
    server = start([str(litellm), "--config", str(config), "--port", str(port), "--host", "127.0.0.1"],
                   f"http://127.0.0.1:{port}/health/liveliness", env)
    try:
        with PeakRSS(server.pid) as rss:
            measured = asyncio.run(load(f"http://127.0.0.1:{port}/v1/chat/completions", [master], "bench", requests, master))
    finally:
        stop(server)
    return {**summary(*measured, rss.peak), "keys": "master key only (virtual keys need PostgreSQL + Prisma)"}


def table(report: dict) -> str:
    rows = [("", "direct (fake upstream)", "routoo serve", "LiteLLM proxy")]
    get = lambda target, key, fmt: fmt.format(report[target][key]) if report[target].get(key) is not None else "n/a"  # noqa: E731
    rows.append(("one request at a time: routing (mean, ms)", "", get("routoo", "alone_routing_mean_ms", "{:.0f}"), ""))
    for prefix, what in (("alone_", "one request at a time"), ("", f"{report['requests']:,} at once")):
        rows.append((f"{what}: latency p50 / p99 (ms)", *(f"{get(t, prefix + 'p50_ms', '{:.0f}')} / {get(t, prefix + 'p99_ms', '{:.0f}')}"
                                                         for t in ("direct", "routoo", "litellm"))))
        rows.append((f"{what}: added p50 / p99 (ms)", "", *(
            f"{get(t, 'added_' + prefix + 'p50_ms', '{:.0f}')} / {get(t, 'added_' + prefix + 'p99_ms', '{:.0f}')}" for t in ("routoo", "litellm"))))
    rows.append((f"{report['requests']:,} at once: requests/s", *(get(t, "requests_per_s", "{:.0f}") for t in ("direct", "routoo", "litellm"))))
    rows.append(("statuses", *(", ".join(f"{k}: {v}" for k, v in sorted(report[t].get("statuses", {}).items()))
                               for t in ("direct", "routoo", "litellm"))))
    routoo = report["routoo"]
    overshoot = max(routoo["overshoot_usd_per_key"].values()) if routoo.get("overshoot_usd_per_key") else None
    rows.append(("max overshoot of a key's budget (USD)", "", f"{overshoot:.6f} (one call: {routoo['one_call_usd']:.6f})",
                 "n/a (no budgets)"))
    rows.append(("leaked holds (USD)", "", f"{routoo['leaked_holds_usd']:.6f}", "n/a"))
    rows.append(("peak RSS (MB)", *(get(t, "peak_rss_mb", "{:.0f}") for t in ("direct", "routoo", "litellm"))))
    return "\n".join("| " + " | ".join(row) + " |" + ("\n|---|---|---|---|" if i == 0 else "") for i, row in enumerate(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    found = shutil.which("litellm")
    parser.add_argument("--litellm", type=Path, default=Path(found) if found else None)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "server.json")
    args = parser.parse_args()
    report = run(args.requests, args.litellm)
    print(table(report))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
