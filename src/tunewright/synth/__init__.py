"""Data generators: each turns some source material into chat rows, behind one registry."""

from .base import GeneratedRow, Generator, available_generators, get_generator, register_generator
from . import grounded as _grounded  # noqa: F401  built-ins register through the same path as plugins

__all__ = ["GeneratedRow", "Generator", "available_generators", "get_generator", "register_generator"]
