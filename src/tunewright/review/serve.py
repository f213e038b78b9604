"""`tunewright review serve`: the review web UI for one workspace, on uvicorn."""

from __future__ import annotations

import os
import secrets
import stat
import sys
from pathlib import Path

from ..config.synth import ReviewSpec
from ..errors import TunewrightError
from ..io import atomic_write_text

SECRET_FILE = "secret.key"
_MIN_SECRET = 32


def session_secret(folder: Path) -> str:
    """The session-signing secret, made once and kept in the workspace so log-ins survive restarts."""
    path = folder / SECRET_FILE
    try:
        if path.is_file():
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                os.chmod(path, 0o600)  # whoever can read it can forge any reviewer's session
            secret = path.read_text(encoding="utf-8").strip()
            if len(secret) >= _MIN_SECRET:
                return secret
        secret = secrets.token_urlsafe(48)
        # The io helpers give the file the umask's permissions from its first byte on; a tight
        # umask makes that 0600 without a window where the secret is readable by others.
        old = os.umask(0o077)
        try:
            atomic_write_text(path, secret + "\n")
        finally:
            os.umask(old)
        return secret
    except OSError as exc:
        raise TunewrightError(f"cannot read or write the review UI's session secret: {exc.strerror or exc}",
                              file=path) from None


def serve_review(workspace, host: str = "127.0.0.1", port: int = 8765, queue: str | None = None) -> None:
    """Serve the review UI for ``workspace`` until interrupted."""
    import uvicorn

    from .web import create_app

    synth = workspace.recipe.synth
    spec = synth.review if synth is not None else ReviewSpec()
    queue = queue or workspace.recipe.dataset_name
    from ..align.dataset import cache_dir

    app = create_app(workspace.registry, spec, secret_key=session_secret(workspace.dir("review")),
                     queue_default=queue, align_cache=cache_dir(workspace))
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host} over plain HTTP; put it behind a TLS proxy before reviewers "
              "log in from other machines", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"review UI for queue '{queue}' at http://{shown}:{port}/ (Ctrl+C stops it)", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
