"""The README's code runs as written: its blocks are extracted and run in a fresh folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"```(\w+)([^\n]*)\n(.*?)```", re.S)


def blocks(section: str) -> list[tuple[str, str, str]]:
    """(language, file name or '', code) of the fenced blocks between ``<!-- section:start/end -->``."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"<!-- {section}:start -->")[1].split(f"<!-- {section}:end -->")[0]
    return [(lang, info.strip(), code) for lang, info, code in FENCE.findall(body)]


def run(args: list[str] | str, cwd: Path, **env: str) -> str:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **env}
    done = subprocess.run(args, cwd=cwd, env=environment, capture_output=True, text=True, shell=isinstance(args, str), timeout=600)
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_route_your_own_models_runs_as_written(tmp_path):
    """Pool file -> prompts -> labels -> training -> RoutooChatModel and RoutooLLM, with the local models."""
    outputs = []
    for lang, name, code in blocks("own-models"):
        if lang == "json":
            json.loads(code)  # the pool file is valid JSON
            (tmp_path / name).write_text(code)
        elif lang == "python":
            (tmp_path / "step.py").write_text(code)
            outputs.append(run([sys.executable, "step.py"], tmp_path))
        elif lang == "bash":
            for line in code.strip().splitlines():
                assert line.startswith("routoo "), line
                outputs.append(run(f"{sys.executable} -m routoo_shared.cli {line[len('routoo '):]}", tmp_path))
    labelled = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert len(labelled) == 32 and all(set(r["results"]) == {"smollm2-135m-instruct", "gemma-3-270m"} for r in labelled)
    assert "total" in outputs[1] and "USD this run" in outputs[1]
    decision = json.loads(outputs[3])
    assert decision["model"] in ("smollm2-135m-instruct", "gemma-3-270m")
    answered_by = outputs[-1].splitlines()[0].split()[0]
    assert answered_by in ("smollm2-135m-instruct", "gemma-3-270m")


def test_using_it_snippets_run_without_calling_a_provider(tmp_path):
    """The 'Using it' blocks, bundled router and an OpenAI pool the bundled predictor knows, up to the network call."""
    code = "\n".join(code for lang, _, code in blocks("using-it") if lang == "python")
    offline = "\n".join(line for line in code.splitlines() if ".invoke(" not in line and "message." not in line)
    offline += "\nprint(chat.router.route('Summarise this contract ...').explain())"
    output = run([sys.executable, "-c", offline], tmp_path, OPENAI_API_KEY="sk-unused")
    assert "predicted quality" in output.splitlines()[-1]  # gpt-4o(-mini) have real labels: no prior


def test_scale_out_examples_run_as_written(redis_server, tmp_path):
    """'Scaling out': the budget on a real redis-server, route-batch with and without a budget (the
    blocking `routoo serve` line is tests/test_shared_state.py's)."""
    for lang, _, code in blocks("scale-out"):
        code = code.replace("redis://localhost:6379/0", redis_server.url)
        if lang == "python":
            (tmp_path / "step.py").write_text(code)
            spent, reserved, remaining = map(float, run([sys.executable, "step.py"], tmp_path).split())
            assert (spent, reserved, remaining) == (0.0031, 0.0, 50.0 - 0.0031)
        for line in code.strip().splitlines() if lang == "bash" else ():
            if line.startswith("routoo route-batch"):
                run(f"{sys.executable} -m routoo_shared.cli {line[len('routoo '):]}", tmp_path)
            elif not line.startswith("routoo serve"):
                run(line, tmp_path)
    planned = [json.loads(line) for line in (tmp_path / "planned.jsonl").read_text().splitlines()]
    assert [d["id"] for d in planned] == [1, 2] and sum(d["estimated_cost_usd"] for d in planned) <= 0.0002
