"""The registry: datasets, runs, adapters, evaluations and retrieval indexes, their lineage, and a
hash-chained audit log."""

from .api import AdapterRecord, DatasetRecord, EvaluationRecord, IndexRecord, Registry, RunRecord
from .events import (AdapterRegistered, DatasetImported, Event, EventRecord, EvaluationRecorded, IndexBuilt,
                     RunFinished, RunResumed, RunStarted, WorkspaceCreated)

__all__ = [
    "Registry", "DatasetRecord", "RunRecord", "AdapterRecord", "EvaluationRecord", "EventRecord",
    "Event", "WorkspaceCreated", "DatasetImported", "RunStarted", "RunFinished", "RunResumed", "AdapterRegistered",
    "EvaluationRecorded", "IndexRecord", "IndexBuilt",
]
