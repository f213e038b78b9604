"""The human review web UI (`tunewright review serve`)."""

from .app import create_app

__all__ = ["create_app"]
