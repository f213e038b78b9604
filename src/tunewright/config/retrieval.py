"""The recipe's ``retrieval:`` section: which sources the workspace's retrieval index covers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
    summaries_found_by: Literal["text", "questions"] = Field(
        "text", description="how a group summary is found: by its text, or by the questions its facts answer "
                            "(the recipe's group patterns filled in; BM25 reads them together, the embeddings "
                            "take the best single one), so 'the cheapest thing you carry' finds the whole "
                            "table's summary and a policy question naming a tent finds no summary")
    summary_rank: int | None = Field(
        None, ge=1, description="a summary comes along only when it ranks in this many of the fused ranking "
                                "(unset: in the top k)")
    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="index name; None: '<recipe name>-index'")

    @model_validator(mode="after")
    def _summaries_set(self) -> "RetrievalSpec":
        if not self.group_summaries and (self.summaries_found_by != "text" or self.summary_rank is not None):
            raise ValueError("summaries_found_by and summary_rank shape group summaries: set group_summaries: true")
        return self
