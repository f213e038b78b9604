"""Retrieval over a workspace's own sources: chunks of tables and documents, a hybrid BM25 + dense
index fused by reciprocal rank, saved and registered like datasets. The first piece of open-book
specialists: a small model answering with the retrieved rows and policy lines in its prompt."""

from .api import build_workspace_index, load_workspace_index, stale_sources
from .chunks import Chunk, chunk_document, chunk_file, chunk_table
from .index import Hit, Index, build_index, changed_sources
from .tokens import tokenize

__all__ = ["Chunk", "Hit", "Index", "build_index", "changed_sources", "chunk_document", "chunk_file", "chunk_table",
           "tokenize", "build_workspace_index", "load_workspace_index", "stale_sources"]
