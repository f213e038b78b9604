"""Human review of generated rows: the queue, decisions, agreement, corrections, and the web UI."""

from .records import CANDIDATE_STATUSES, DECISIONS, CandidateRecord, ReviewRecord
from .reviewers import add_reviewer, authenticate, reviewer_names
from .store import NewCandidate, QueueFilter, ReviewStore, RoundRecord, RoundSummary

__all__ = ["CANDIDATE_STATUSES", "DECISIONS", "CandidateRecord", "NewCandidate", "QueueFilter", "ReviewRecord",
           "ReviewStore", "RoundRecord", "RoundSummary", "add_reviewer", "authenticate", "reviewer_names"]
