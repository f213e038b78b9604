"""Knowledge update without retraining: time from a catalog edit to a correct answer through the API.

Takes a workspace with a trained open-book adapter (e.g. after `make demo`), copies it, starts
`tunewright serve` on the copy, and asks the adapter (OpenAI chat API) the price of one catalog row.
Then it edits that row's price in the CSV, runs `tunewright index build` (the one command a user
runs), and asks again until the answer states the new price. Printed: the seconds from the edit to
the first correct answer, split into the index build and the wait at the API, against the seconds
the closed-book way would take (retraining the adapter; read from a training run in the same
workspace, or given with --retrain-seconds).

Usage: python benchmarks/knowledge_update.py WORKSPACE [--adapter peachtree] [--table catalog.csv]
       [--row 2] [--column price_usd] [--name-column name] [--retrain-seconds S]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from serve_helpers import free_port  # noqa: E402


def ask(url: str, model: str, question: str) -> str:
    reply = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
        "model": model, "messages": [{"role": "user", "content": question}], "max_tokens": 40, "temperature": 0})
    reply.raise_for_status()
    return reply.json()["choices"][0]["message"]["content"]


def edit_cell(table: Path, line: int, column: str, value: str) -> str:
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    old = rows[line - 2][column]
    rows[line - 2][column] = value
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    table.write_text(out.getvalue())
    return old


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--adapter", default="peachtree")
    parser.add_argument("--table", default="catalog.csv")
    parser.add_argument("--row", type=int, default=2, help="CSV line of the row to edit (header is line 1)")
    parser.add_argument("--column", default="price_usd")
    parser.add_argument("--name-column", default="name")
    parser.add_argument("--retrain-seconds", type=float, default=None)
    args = parser.parse_args()

    from tunewright.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        shutil.copytree(args.workspace, root, ignore=shutil.ignore_patterns("reports", "exports", "runs"))
        table = root / args.table
        rows = list(csv.DictReader(io.StringIO(table.read_text())))
        name = rows[args.row - 2][args.name_column]
        new_value = str(int(float(rows[args.row - 2][args.column])) + 7)
        question = f"How much does the {name} cost?"
        retrain = args.retrain_seconds
        if retrain is None:
            runs = [r for r in Workspace.open(root).registry.list_runs() if r.status == "completed"]
            retrain = max((r.metrics.get("train_seconds") or 0) for r in runs) if runs else float("nan")

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "tunewright", "-w", str(root), "serve", "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            before = ask(url, args.adapter, question)
            edited = time.perf_counter()
            old = edit_cell(table, args.row, args.column, new_value)
            subprocess.run([sys.executable, "-m", "tunewright", "-w", str(root), "index", "build"], check=True,
                           stdout=subprocess.DEVNULL)
            built = time.perf_counter()
            answer, tries = "", 0
            while new_value not in answer and tries < 30:
                answer, tries = ask(url, args.adapter, question), tries + 1
            done = time.perf_counter()
        finally:
            server.terminate()
            server.wait(timeout=60)
    result = {"question": question, "old": old, "new": new_value, "answer_before": before, "answer_after": answer,
              "correct": new_value in answer, "index_build_s": round(built - edited, 2),
              "api_wait_s": round(done - built, 2), "edit_to_answer_s": round(done - edited, 2),
              "retrain_s": retrain, "speedup": round(retrain / (done - edited), 1) if new_value in answer else None}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
