"""The recipe's ``retrieval:`` section: which sources the workspace's retrieval index covers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RetrievalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[str] | None = Field(
        None, description="workspace-relative tables (.csv) and documents (.md, .txt) to index; "
                          "None: every build.tables[].path and build.documents[].path")
    k: int = Field(3, ge=1, description="chunks retrieved per question")
    stem: bool = Field(False, description="BM25 on Snowball stems ('cancel' finds 'Cancelling') instead of "
                                          "plural-folded words")
    group_summaries: bool = Field(
        False, description="add one passage per group of each build table with 'groups' (its members, lowest "
                           "and highest, in the recipe's answer patterns), so 'which is your cheapest ...?' "
                           "has a record to read")
    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="index name; None: '<recipe name>-index'")
