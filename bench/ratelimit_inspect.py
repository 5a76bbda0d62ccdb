"""inspect-ai at its defaults against a server: ``model_graded_qa`` on N samples, one grading call each.

Run by ``bench/ratelimit.py`` with the python of a separate virtualenv that has inspect-ai (never a
dependency of this project); prints one JSON line: samples scored, samples lost (an error or no score),
wall seconds. The solver writes a canned answer (no model call), so only the grader talks to the server.

    $HOME/peer-venvs/main/bin/python bench/ratelimit_inspect.py BASE_URL N TAG
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time


def main() -> None:
    base_url, n, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    for k, v in {"INSPECT_DISABLE_TELEMETRY": "1", "INSPECT_NO_ANSI": "1", "DO_NOT_TRACK": "1"}.items():
        os.environ.setdefault(k, v)
    os.environ["OPENAI_API_KEY"] = "sk-loopback"
    os.environ["OPENAI_BASE_URL"] = base_url
    from inspect_ai import Task
    from inspect_ai import eval as inspect_eval
    from inspect_ai.dataset import Sample
    from inspect_ai.model import ModelOutput, get_model
    from inspect_ai.scorer import model_graded_qa
    from inspect_ai.solver import solver

    @solver
    def canned_answer():  # type: ignore[no-untyped-def]
        async def solve(state, generate):  # type: ignore[no-untyped-def]
            state.output = ModelOutput.from_content(model="canned", content=state.metadata["answer"])
            return state

        return solve

    grader = get_model("openai/gpt-4o-mini", base_url=base_url, api_key="sk-loopback")
    samples = [
        Sample(input=f"What is {i} + {i}? ({tag})", target=str(2 * i), id=f"{tag}{i}", metadata={"answer": str(2 * i)})
        for i in range(n)
    ]
    task = Task(dataset=samples, solver=canned_answer(), scorer=model_graded_qa(model=grader))
    start = time.perf_counter()
    logs = inspect_eval(
        task,
        model="mockllm/model",
        display="none",
        log_dir=tempfile.mkdtemp(prefix="inspect-ratelimit-"),
        score_display=False,
        fail_on_error=False,
    )
    wall = time.perf_counter() - start
    log = logs[0]
    scored = sum(1 for s in (log.samples or []) if s.scores and not s.error)
    print(
        json.dumps(
            {
                "scored": scored,
                "lost": n - scored,
                "wall": wall,
                "status": log.status,
                "error": str(log.error)[:200] if log.error else None,
            }
        )
    )


if __name__ == "__main__":
    main()
