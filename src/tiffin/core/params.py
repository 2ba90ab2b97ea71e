"""params.yaml, as models: each stage's section with its types, defaults and meaning.

The stages and the lifecycle read their sections through these (`Params.section`), so a default lives here
only, a wrong type or an unknown key is refused where it is read, and the docs' params reference is made
from these models.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tiffin.core.config_errors import ConfigError, explain, read_mapping


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    @classmethod
    def from_params(cls, section: dict[str, Any] | None) -> Any:
        """The section as given in params.yaml (absent: every default)."""
        return cls.model_validate(section or {})


class Ingest(_Section):
    """`ingest`: the closed window on the spec's `source.window_column` that the pipeline trains on."""

    start: date
    """First day of the window."""
    end: date
    """Last day of the window (included); moving it takes a new snapshot of the source."""


class Validate(_Section):
    """`validate`: how many rows may break the contract before the stage stops."""

    max_quarantine_share: float = Field(0.01, ge=0, le=1)
    """Stop when more than this share of the rows break the contract (they are kept in quarantine, named by
    row, field, value and rule). Rows whose target has not arrived are unlabeled, not failures."""


class Split(_Section):
    """`split`: train, validation and test as consecutive periods, the test period the latest. Give the two
    dates, or the two shares of the time span."""

    validation_start: date | None = None
    """First day of the validation period (with `test_start`)."""
    test_start: date | None = None
    """First day of the test period: the holdout the gate compares models on."""
    validation_share: float | None = Field(None, gt=0, lt=1)
    """Share of the rows, before the test rows, that validate (with `test_share`)."""
    test_share: float | None = Field(None, gt=0, lt=1)
    """Share of the rows, the latest, that test."""

    @model_validator(mode="after")
    def _dates_or_shares(self) -> Split:
        dates, shares = (self.validation_start, self.test_start), (self.validation_share, self.test_share)
        if not (all(v is not None for v in dates) or all(v is not None for v in shares)):
            raise ValueError("give validation_start and test_start (dates), or validation_share and test_share")
        if all(v is not None for v in dates) and self.validation_start >= self.test_start:
            raise ValueError("validation_start must come before test_start")
        return self


class Evaluate(_Section):
    """`evaluate`: when the evaluate stage stops the pipeline."""

    must_beat_baseline: bool | Literal["per_series"] = True
    """`true`: the model must beat the naive baseline overall; `per_series`: and on every series with at least
    `min_series_rows` test rows; `false`: report only."""
    min_series_rows: int = Field(50, ge=1)
    """Series with fewer test rows get the verdict `too few rows`, not judged."""


class Bless(_Section):
    """`bless`: the promotion gate, the candidate against the champion on the latest holdout."""

    metric: Literal["mae", "rmse"] = "mae"
    """The error the gate compares."""
    margin: float = Field(0.02, ge=0, lt=1)
    """The candidate's overall error must be at most (1 - margin) x the champion's."""
    slice_tolerance: float = Field(0.10, ge=0)
    """No slice's error may grow by more than this share of the champion's."""
    min_slice_rows: int = Field(50, ge=1)
    """Smaller segments are reported, not judged."""
    confidence: float = Field(0.95, gt=0.5, lt=1)
    """The intervals' coverage (two-sided): promote only if the overall change's upper end is at most -margin;
    refuse for a slice whose change is over the tolerance only if its lower end is above 0 (surely worse). The
    judged slices' intervals are simultaneous (Bonferroni), so a dozen slices are not a dozen chances of a false
    regression."""
    bootstrap_samples: int = Field(1000, ge=100, le=100_000)
    """Resamples of the holdout's days (a block bootstrap: hours of one day share their weather and errors)."""
    seed: int = Field(0, ge=0)
    """The bootstrap's random seed: the same holdout and models give the same decision."""


class Retrain(_Section):
    """`retrain`: the triggers `tiffin retrain` checks, and the windows of the model it trains."""

    min_new_hours: int = Field(24 * 28, ge=1)
    """New data: this many hours per series (the median over series) after the champion's window."""
    max_age_days: int = Field(90, ge=1)
    """Schedule: the champion's data ends more than this many days before today."""
    max_mae_ratio: float = Field(1.5, gt=0)
    """Metric drop: production MAE above this times the champion's test MAE ..."""
    metric_window_days: int = Field(14, ge=1)
    """... over the last this many days that have actuals ..."""
    min_metric_rows: int = Field(100, ge=1)
    """... with at least this many rows (fewer: not judged)."""
    holdout_days: int = Field(28, ge=1)
    """The retrained model's test period (the gate's holdout): the latest days."""
    validation_days: int = Field(28, ge=1)
    """And the days before it that validate; training gets all earlier data."""
    cooldown_days: int = Field(14, ge=0)
    """No retrain starts within this many days (by the check's day, `--now`) after the last one started, whatever
    fired, except on request (`--force`): a candidate the gate refused is not retrained again at every check.
    0: no cooldown."""
    metric_checks: int = Field(3, ge=1)
    """Metric drop fires only when the production error has been over the limit at this many consecutive checks
    of the same champion (recorded in `retrain_checks`): one bad window is not a trend."""


class Monitor(_Section):
    """`monitor`: when `tiffin monitor` raises the alarm (exit 4)."""

    feature_psi: float = Field(0.2, gt=0)
    """A feature has drifted at or above this PSI against its reference (0.2: a significant shift); a calibrated
    model's own threshold per feature replaces it (`tiffin monitor calibrate`)."""
    max_drifted_features: int = Field(2, ge=0)
    """Alarm when more features than this have drifted."""
    prediction_psi: float = Field(0.2, gt=0)
    """Alarm at or above this PSI of the predictions."""
    max_mae_ratio: float = Field(1.5, gt=0)
    """Alarm when production MAE is over this times the model's test MAE."""
    min_rows: int = Field(100, ge=1)
    """Fewer logged rows (or rows with actuals) are reported, not judged: PSI is noisy on few rows."""
    reference: Literal["training", "profile", "year_ago"] = "training"
    """What a window's inputs are compared with: `training` (the model's training rows as they are), `profile`
    (those rows re-weighted to the window's hour-of-week x season mix) or `year_ago` (the same days a year
    earlier, the profile where the training rows do not reach back)."""
    window_days: int = Field(28, ge=1)
    """The monitoring window that `tiffin monitor calibrate` replays the training period in (use the size you
    monitor with)."""
    alarms_per_quarter: float = Field(1.0, gt=0)
    """Calibration's target: this many false alarms per feature per quarter on healthy data; each calibrated
    threshold is at least `feature_psi` (`prediction_psi` for the predictions)."""


class Params(BaseModel):
    """The whole file: which spec, then one section per stage."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    spec: str
    """The dataset spec the pipeline trains on (a path, e.g. `specs/bike_sharing.yaml`)."""
    ingest: Ingest
    validate_: Validate = Field(Validate(), alias="validate")
    split: Split
    train: dict[str, Any] = {}
    """The estimator's parameters, over the spec's `model.params` (any the estimator accepts; others refused
    when it is built)."""
    evaluate: Evaluate = Evaluate()
    bless: Bless = Bless()
    retrain: Retrain = Retrain()
    monitor: Monitor = Monitor()


def check(params: dict[str, Any]) -> Params:
    """The params as models; pydantic's ValidationError names the key that is wrong."""
    return Params.model_validate(params)


class ParamsError(ConfigError):
    """A params file that cannot be used: the file, the key path and what is allowed there."""


def load(path: str | Path, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Read params.yaml and check it against `Params`; a mistake is a ParamsError naming the file and the key.

    `only` checks just those sections (when present), for a command that reads one section from a file that may
    hold nothing else (`tiffin monitor --params thresholds.yaml`). The checked file is returned as read (a dict),
    so a stage reads its section the way DVC tracks it.
    """
    content = read_mapping(path, "params are a mapping of sections (spec, ingest, split, ...)", ParamsError)
    try:
        if only is None:
            Params.model_validate(content)
        else:
            sections = {key: content[key] for key in only if key in content}
            _Sections.model_validate(sections)
    except ValidationError as wrong:
        raise explain(wrong, path, Params, ParamsError) from None
    return content


class _Sections(Params):
    """Params with every section optional: to check some sections of a file alone."""

    spec: str | None = None
    ingest: Ingest | None = None
    split: Split | None = None
