"""The registry: datasets, runs, adapters and evaluations, their lineage, and a hash-chained audit log."""

from .api import AdapterRecord, DatasetRecord, EvaluationRecord, Registry, RunRecord
from .events import (AdapterRegistered, DatasetImported, Event, EventRecord, EvaluationRecorded, RunFinished,
                     RunResumed, RunStarted, WorkspaceCreated)

__all__ = [
    "Registry", "DatasetRecord", "RunRecord", "AdapterRecord", "EvaluationRecord", "EventRecord",
    "Event", "WorkspaceCreated", "DatasetImported", "RunStarted", "RunFinished", "RunResumed", "AdapterRegistered",
    "EvaluationRecorded",
]
