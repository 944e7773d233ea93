"""The team over HTTP: who has labelled (``GET /reviewers``) and how far they agree (``GET /agreement``).

Plain functions: FastAPI runs them on its thread pool, so reading the label history never blocks
the event loop. Both read the store's whole label history (:mod:`mnist_hitl.workbench.agreement`).
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from mnist_hitl.api.dependencies import CurrentWorkbench
from mnist_hitl.api.schemas import errors

router = APIRouter(tags=["team"])


class ReviewerOut(BaseModel):
    reviewer: str = Field(description="the name labels were given under (unknown: before labels had reviewers)")
    labels: int = Field(description="confirmations and corrections given")
    undos: int = Field(description="labels taken back")
    drawings: int = Field(description="drawings whose label by this reviewer holds now (the latest, not undone)")
    last_labelled_at: str = Field(description="when the latest label or undo was given (UTC, ISO 8601)")
    compared: int = Field(description="drawings of theirs other named reviewers labelled too (0 for unknown)")
    agreement: float | None = Field(
        description="the share of those where their label is the decided one (null: none compared)"
    )


class PairOut(BaseModel):
    reviewers: list[str] = Field(min_length=2, max_length=2)
    drawings: int = Field(description="drawings both labelled")
    agreement: float = Field(description="the share of those they gave the same digit")
    kappa: float | None = Field(description="Cohen's kappa (null: every label compared is one digit)")


class DigitOut(BaseModel):
    drawings: int = Field(description="drawings labelled by two or more where someone gave this digit")
    specific_agreement: float | None = Field(
        description="of the pairs of labels of one drawing where one gives this digit, the share where both do"
    )


class QualityOut(BaseModel):
    drawings: int = Field(description="drawings other named reviewers labelled too")
    agreement: float | None = Field(
        description="the share of those where this reviewer's label is the decided one: the other reviewers'"
        " majority, a tie going to the latest of the tied labels (null: none compared)"
    )


class AgreementOut(BaseModel):
    reviewers: dict[str, int] = Field(description="drawings each named reviewer holds a label of")
    unattributed_labels: int = Field(description="drawings with a label from before labels had reviewers (left out)")
    shared_drawings: int = Field(description="drawings two or more reviewers labelled")
    alpha: float | None = Field(description="Krippendorff's alpha (nominal) of the whole team over those drawings")
    kappa: list[PairOut] = Field(description="each pair of reviewers who share a drawing")
    digits: dict[str, DigitOut] = Field(description="per digit, 0 to 9")
    quality: dict[str, QualityOut] = Field(
        description="per named reviewer, the busiest first: their agreement with the decided labels"
    )


@router.get("/reviewers", response_model=list[ReviewerOut], responses=errors(503))
def reviewers(workbench: CurrentWorkbench) -> list[dict]:
    """Everyone who has given a label, the busiest first."""
    return workbench.reviewers()


@router.get("/agreement", response_model=AgreementOut, responses=errors(503))
def agreement(workbench: CurrentWorkbench) -> dict:
    """How far the reviewers agree: Cohen's kappa per pair, Krippendorff's alpha for all, per digit, and each
    reviewer's agreement with the decided labels."""
    return workbench.agreement()
