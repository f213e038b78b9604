"""Ask a running `tunewright serve` the same questions of the base model and an adapter, with the
official openai client, and print the answers side by side (`make serve-demo` runs it).

Usage: python scripts/side_by_side.py [--url http://127.0.0.1:8000/v1] [--adapter peachtree] [QUESTION ...]
"""

from __future__ import annotations

import argparse
import os
import time

from openai import OpenAI
from rich.console import Console
from rich.table import Table

QUESTIONS = ["How much does the Ridgeback 2 Tent cost?", "What is your return window?",
             "Where is Peachtree Outfitters based?", "What warranty does the Aurora Headlamp have?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("questions", nargs="*", default=QUESTIONS)
    parser.add_argument("--url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--adapter", default="peachtree")
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    client = OpenAI(base_url=args.url, api_key=os.environ.get("TUNEWRIGHT_API_KEY", "none"))
    console = Console()
    console.print("models:", ", ".join(m.id for m in client.models.list()))
    table = Table("question", "base", args.adapter, show_lines=True)
    for question in args.questions:
        answers = []
        for model in ("base", args.adapter):
            started = time.perf_counter()
            reply = client.chat.completions.create(model=model, max_tokens=args.max_tokens,
                                                   messages=[{"role": "user", "content": question}])
            answers.append(f"{reply.choices[0].message.content}\n[dim]{reply.usage.completion_tokens} tokens, "
                           f"{time.perf_counter() - started:.1f} s, {reply.choices[0].finish_reason}[/dim]")
        table.add_row(question, *answers)
    console.print(table)
    stream = client.chat.completions.create(model=args.adapter, stream=True, max_tokens=args.max_tokens,
                                            messages=[{"role": "user", "content": args.questions[0]}])
    console.print(f"streamed from {args.adapter}: ", end="")
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            console.print(chunk.choices[0].delta.content, end="")
    console.print()


if __name__ == "__main__":
    main()
