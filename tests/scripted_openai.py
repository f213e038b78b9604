"""A scripted OpenAI-compatible server on 127.0.0.1 (real HTTP) for teacher tests.

Each POST to /v1/chat/completions (or /v1/completions, a raw text prompt) takes the next step of
the script: an answer, an HTTP status, a delay, malformed JSON or an empty answer. When the script
runs out it answers normally.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ScriptedServer:
    def __init__(self, script=None, responder=None):
        """``responder(body) -> text`` writes the answer once the script has run out (a teacher
        whose replies depend on the prompt); a step may also be ("fail", kind) by prompt."""
        self.script = list(script or [])
        self.responder = responder
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append({"body": body, "headers": dict(self.headers), "path": self.path})
                    step = outer.script.pop(0) if outer.script else ("answer", None)
                kind, value = step
                if kind == "answer" and value is None and outer.responder is not None:
                    value = outer.responder(body)
                    if isinstance(value, tuple):  # the responder chose a failure for this prompt
                        kind, value = value
                raw = not self.path.endswith("/chat/completions")
                if kind == "sleep":
                    time.sleep(value)
                    kind, value = "answer", None
                if kind == "status":
                    code, headers = value
                    self.send_response(code)
                    for name, header in headers.items():
                        self.send_header(name, header)
                    self.end_headers()
                    self.wfile.write(b'{"error": "scripted"}')
                    return
                if kind == "malformed":
                    payload = b"{not json"
                elif kind == "empty":
                    choice = {"text": "  "} if raw else {"message": {"content": "  "}}
                    payload = json.dumps({"choices": [choice]}).encode()
                elif raw:
                    payload = json.dumps({
                        "choices": [{"text": value or f"echo: {body['prompt']}"}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
                    }).encode()
                else:
                    text = value or f"echo: {body['messages'][-1]['content']}"
                    payload = json.dumps({
                        "choices": [{"message": {"role": "assistant", "content": text}}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
                    }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
