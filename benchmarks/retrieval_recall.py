"""Retrieval recall@k of BM25 alone, dense alone and the hybrid (RRF) on a set of customer questions.

A question counts as covered at k when one of its accepted phrases occurs in one of the top-k chunk
texts: case-insensitive, as whole words, each word allowed a plural "s" (``answer_matches`` of
``tunewright.evaluate.matching``, the rule the customer questions and retention probes are scored with).
Some questions cannot be covered by any chunk (an accepted answer such as "yes" or "do not sell"
appears in no source); the script counts those too, as the ceiling.

    .venv/bin/python benchmarks/retrieval_recall.py --questions examples/peachtree/customer-questions.jsonl \\
        examples/peachtree/catalog.csv examples/peachtree/policies.md [--ks 1,3,5] [--json out.json] [--misses]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tunewright.evaluate.matching import answer_matches
from tunewright.evaluate.questions import load_questions
from tunewright.retrieval import build_index

METHODS = ("bm25", "dense", "hybrid")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", type=Path, help="tables (.csv) and documents (.md, .txt) to index")
    parser.add_argument("--questions", type=Path, required=True, help="JSONL: question, accept (list), kind")
    parser.add_argument("--ks", default="1,3,5", help="comma-separated cut-offs (default 1,3,5)")
    parser.add_argument("--json", type=Path, help="also write the numbers and per-question ranks here")
    parser.add_argument("--misses", action="store_true", help="list the questions hybrid misses at the largest k")
    args = parser.parse_args(argv)
    ks = sorted({int(k) for k in args.ks.split(",")})

    questions = load_questions(args.questions).questions
    started = time.perf_counter()
    index = build_index(args.sources)
    built = time.perf_counter() - started

    searches = {"bm25": index.search_bm25, "dense": index.search_dense, "hybrid": index.search}
    reachable = [any(answer_matches(c.text, q.accept) for c in index.chunks) for q in questions]
    rows = []
    started = time.perf_counter()
    for q, can in zip(questions, reachable):
        row = {"line": q.line, "question": q.question, "kind": q.kind, "reachable": can}
        for method, search in searches.items():
            hits = search(q.question, max(ks))
            # The rank of the first chunk holding an accepted phrase; None: not in the top max(ks).
            row[method] = next((r for r, h in enumerate(hits, start=1) if answer_matches(h.chunk.text, q.accept)), None)
            row[f"{method}_top"] = [h.chunk.id for h in hits]
        rows.append(row)
    per_query = (time.perf_counter() - started) / len(questions)

    n = len(questions)
    recall = {m: {k: sum(1 for r in rows if r[m] is not None and r[m] <= k) for k in ks} for m in METHODS}
    print(f"{len(index)} chunks from {', '.join(s['file'] for s in index.sources)}; index {index.version}; "
          f"built in {built:.1f} s; {per_query * 1000:.0f} ms per question for all three searches")
    print(f"{n} questions; {sum(reachable)} have an accepted phrase in some chunk (the ceiling)\n")
    print("| method | " + " | ".join(f"recall@{k}" for k in ks) + " |")
    print("| --- | " + " | ".join("---:" for _ in ks) + " |")
    for m in METHODS:
        print(f"| {m} | " + " | ".join(f"{recall[m][k] / n:.1%} ({recall[m][k]}/{n})" for k in ks) + " |")
    if args.misses:
        print(f"\nhybrid misses at k={max(ks)}:")
        for r in rows:
            if r["hybrid"] is None:
                why = "" if r["reachable"] else "  (no chunk holds an accepted phrase)"
                print(f"  line {r['line']}: {r['question']}{why}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"index": index.manifest(), "n": n, "ceiling": sum(reachable),
                                         "recall": recall, "questions": rows}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
