"""Pydantic models: the API contract as published in the OpenAPI spec.

Float values that may be non-finite are ``float | str``: JSON has no NaN, so the service writes
a NaN as the string "NaN" (and +-Infinity as "Infinity"/"-Infinity"), never as null.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from losswatch.detectors.objective import OBJECTIVES
from losswatch.detectors.schedules import build_schedule
from losswatch.detectors.types import ACTION_TYPES, ALERT_EVENTS, HEALTH_STATES, KINDS, SEVERITIES

from ..ingest import LABEL_RE, MAX_STEP

LABEL_PATTERN = f"^{LABEL_RE.pattern}$"
# the contract's tuples (Literal[tuple] is Literal of its items)
Health = Literal[HEALTH_STATES]
Severity = Literal[SEVERITIES]
Kind = Literal[KINDS]
ActionType = Literal[ACTION_TYPES]
AlertEvent = Literal[ALERT_EVENTS]
Objective = Literal[OBJECTIVES]

Num = Union[float, Literal["NaN", "Infinity", "-Infinity"], None]


# --- requests ------------------------------------------------------------------------------

class StepRecordIn(BaseModel):
    """One training step (DESIGN.md "The record"). Non-finite values as "NaN"/"Infinity"/
    "-Infinity" (bare NaN/Infinity tokens are accepted too)."""

    model_config = ConfigDict(extra="forbid")
    step: int = Field(ge=0, le=MAX_STEP)
    loss: Num = None
    grad_norm: Num = None
    lr: Num = None
    val_loss: Num = None
    ts: Optional[float] = Field(None, description="seconds since the epoch")
    extra: Optional[dict[str, Num]] = Field(None, max_length=64, description=(
        "more named values; the names ds_width and ds_steps are reserved (they mark a downsampled "
        "bucket when the series is read)"))


class StepsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    records: list[StepRecordIn] = Field(description="at most LOSSWATCH_MAX_BATCH_RECORDS (10,000)")
    project: Optional[str] = Field(None, pattern=LABEL_PATTERN,
                                   description="the run's project (or ?project=; else the token's only "
                                               "project, or with auth off `default`)")


class LRSchedule(BaseModel):
    """A declared LR schedule: ``{"name": "cosine", "params": {"lr": 3e-4, "total_steps": 1000}}``;
    the flat form ``{"name": "cosine", "lr": 3e-4, "total_steps": 1000}`` is accepted too. Stored
    and passed to the detectors flat (the form losswatch.detectors.schedules.build_schedule reads).
    A declaration build_schedule refuses (unknown name, missing or impossible parameter) is a 422
    naming the problem: every schedule stored evaluates at every step."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(max_length=128)
    params: dict[str, Any] = Field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        return {"name": self.name, **(self.model_extra or {}), **self.params}

    @model_validator(mode="after")
    def _buildable(self) -> "LRSchedule":
        build_schedule(self.flat())  # its ValueError becomes the 422's message
        return self


class CheckpointIn(BaseModel):
    """A checkpoint the client recorded: the state from which step ``step`` runs."""

    model_config = ConfigDict(extra="allow")
    step: int = Field(ge=0, le=MAX_STEP)
    path: Optional[str] = Field(None, max_length=4096)


class RewindIn(BaseModel):
    """A rollback the client made: at ``at_step`` the run went back to the checkpoint of ``to_step``."""

    model_config = ConfigDict(extra="allow")
    to_step: int = Field(ge=0, le=MAX_STEP)
    at_step: int = Field(ge=0, le=MAX_STEP)


class RunMetaIn(BaseModel):
    """Run metadata. Unknown extra fields are kept as they are."""

    model_config = ConfigDict(extra="allow")
    project: Optional[str] = Field(None, pattern=LABEL_PATTERN, description="the run's project (or ?project=; "
                                   "else the token's only project, or with auth off `default`)")
    task: Optional[str] = Field(None, max_length=256)
    model: Optional[str] = Field(None, max_length=256)
    optimizer: Optional[str] = Field(None, max_length=256)
    batch_size: Optional[int] = Field(None, ge=1, le=2**53)
    lr_schedule: Optional[LRSchedule] = None
    objective: Optional[Objective] = Field(
        None, description='what the logged loss is: "minimised" (the default: training drives it down to a '
                          'floor), "adversarial" (a GAN\'s) or "reinforcement" (an RL loss); for the last '
                          "two only the detectors whose facts hold whatever the loss means run (non-finite "
                          "values, the gradient, the LR)")
    tags: Union[dict[str, str], list[str], None] = None
    checkpoints: Optional[list[CheckpointIn]] = Field(
        None, max_length=64, description="the client's latest checkpoints, oldest first: the service keeps "
                                         "the detectors' state at each (the last 8)")
    rewinds: Optional[list[RewindIn]] = Field(
        None, max_length=64, description="the client's latest rollbacks, oldest first: a new one begins a new "
                                         "attempt of the run at its first re-logged step")
    status: Optional[Literal["running", "finished"]] = Field(
        None, description='"finished": the run ended as planned (the client sets it when closed '
                          "cleanly); exported as losswatch_run_finished, so the stopped-reporting "
                          "alert leaves the run alone")


class ActionIn(BaseModel):
    """An Action as the detectors advise it: its type, its parameters, the reason."""

    model_config = ConfigDict(extra="allow")
    type: ActionType


class ActionReportIn(BaseModel):
    """A client reports an action it applied (or would have: dry run)."""

    model_config = ConfigDict(extra="forbid")
    step: int = Field(ge=0, le=MAX_STEP)
    action: ActionIn = Field(description='an Action: {"type": ..., params..., "reason": ...}')
    applied: bool
    dry_run: bool = False
    alert_id: Optional[str] = Field(None, max_length=300)
    note: Optional[str] = Field(None, max_length=2000)


# --- responses -----------------------------------------------------------------------------

class ActionOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: ActionType
    reason: str = ""


class AlertOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    run_id: str
    project: str
    step: int
    last_step: Optional[int] = None
    resolved_step: Optional[int] = None
    kind: str
    severity: Severity
    detector: str
    message: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    action: dict[str, Any] = Field(default_factory=dict)
    acknowledged: bool = False
    acknowledged_at: Optional[float] = None
    event: AlertEvent = Field("raised", description="what this copy of the alert reports: raised, "
                              "escalated (more severe, or a new action), updated or resolved")
    incident: str = Field("", description="id of the incident the alert belongs to (the id of its "
                          "first alert); alerts of one incident refine one verdict")
    raised_at: float
    updated_at: float


class StepsOut(BaseModel):
    accepted: int
    duplicates: int
    out_of_order: int
    alerts: list[AlertOut]
    recommendation: Optional[dict[str, Any]]
    health: Health


class AttemptOut(BaseModel):
    attempt: int
    start: Optional[int] = Field(description="its first step (the rewind's to_step); None: the run's first")
    rewound_at: Optional[int] = Field(description="the step at which the client rolled back to start it")


class RunOut(BaseModel):
    run_id: str
    project: str
    meta: dict[str, Any]
    created_at: float
    last_seen: Optional[float]
    last_step: Optional[int]
    n_steps: int
    duplicates: int
    out_of_order: int
    last: dict[str, Num]
    spike_rate: Optional[float] = Field(None, description="share of the run's last 128 records "
                                        "that were loss spikes (None before the first record, and "
                                        "for a run whose objective turns the spike detector off)")
    health: Health
    active_alerts: list[AlertOut]
    recommendation: Optional[dict[str, Any]]
    attempt: int = Field(1, description="the current attempt: 1, plus one for each rollback whose re-logged "
                                        "steps arrived")
    attempts: list[AttemptOut] = Field(default_factory=list)
    alerts: Optional[list[AlertOut]] = Field(None, description="the answer to a metadata PUT only: the alert "
                                             "changes the new metadata made (the alerts of detectors it took "
                                             "off or rebuilt, resolved)")


class RunsOut(BaseModel):
    runs: list[RunOut]


class SeriesColumns(BaseModel):
    step: list[int]
    loss: list[Num]
    grad_norm: list[Num]
    lr: list[Num]
    val_loss: list[Num]
    ts: list[Optional[float]]
    extra: list[Optional[dict[str, Num]]]


class DownsampleInfo(BaseModel):
    method: Literal["minmax"]
    buckets: int
    description: str


class SeriesOut(BaseModel):
    run_id: str
    project: str
    attempt: Optional[int] = Field(None, description="the attempt read; None: the run's current timeline")
    start: Optional[int]
    end: Optional[int]
    total: int = Field(description="points stored in [start, end]")
    count: int = Field(description="points returned")
    downsampled: Optional[DownsampleInfo] = None
    series: SeriesColumns


class ActionReportOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    run_id: str
    project: str
    step: int
    action: dict[str, Any]
    applied: bool
    dry_run: bool
    reported_at: float


class RunAlertsOut(BaseModel):
    run_id: str
    project: str
    alerts: list[AlertOut]
    actions: list[ActionReportOut]


class AlertsOut(BaseModel):
    alerts: list[AlertOut]


class ErrorOut(BaseModel):
    detail: Any


class ReadyOut(BaseModel):
    ready: bool
    store: str
    reason: Optional[str] = None
