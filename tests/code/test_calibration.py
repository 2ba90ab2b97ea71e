"""Seasonal drift references and calibrated thresholds, on the example's real hours (2011 as the training
reference, 2012 as production) with a synthetic seasonal feature where the truth must be known exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tiffin.core.contract import Contract
from tiffin.core.params import Monitor
from tiffin.core.spec import DatasetSpec
from tiffin.lifecycle import drift_reference
from tiffin.lifecycle.calibration import (
    RUN_FLOOR,
    TAIL_FLOOR,
    Calibration,
    calibrate,
    statistic_quantile,
    target_quantile,
    window_psis,
)
from tiffin.lifecycle.drift import (
    contiguous,
    feed_features,
    label_contexts,
    longest_run,
    numeric_psi,
    tail_share,
    unseen_pairs,
    unseen_share,
    window_statistics,
)
from tiffin.lifecycle.monitoring import judge_window

SEASONAL = "temp"  # replaced by a pure annual cycle plus noise: its only drift is the calendar


@pytest.fixture(scope="module")
def hours(bike_spec: DatasetSpec, bike_raw: pd.DataFrame) -> pd.DataFrame:
    """Both years, canonical, with the seasonal feature and a `prediction` (the reference carries one)."""
    rows = Contract(bike_spec).validate(bike_raw).valid.reset_index(drop=True)
    day = pd.to_datetime(rows["dteday"]).dt.dayofyear.to_numpy()
    noise = np.random.default_rng(0).normal(0, 2, len(rows))
    return rows.assign(**{SEASONAL: 15 - 10 * np.cos(2 * np.pi * (day - 15) / 365) + noise, "prediction": noise})


def _days(frame: pd.DataFrame, first: str, last: str) -> pd.DataFrame:
    return frame[(frame["dteday"] >= first) & (frame["dteday"] <= last)]


@pytest.fixture(scope="module")
def training(hours: pd.DataFrame) -> pd.DataFrame:
    return _days(hours, "2011-01-01", "2011-12-31")


@pytest.fixture(scope="module")
def july(hours: pd.DataFrame) -> pd.DataFrame:
    return _days(hours, "2012-07-02", "2012-07-29")


def test_the_profile_gives_each_hour_of_week_and_season_cell_the_windows_share(
    training: pd.DataFrame, july: pd.DataFrame, bike_spec: DatasetSpec
) -> None:
    against = drift_reference.build(training, july, bike_spec, "profile")
    assert against.kind == "profile" and against.weights.sum() == pytest.approx(1)
    reference_cells = drift_reference.cells(pd.to_datetime(bike_spec.event_time(against.rows)))
    window_cells = drift_reference.cells(pd.to_datetime(bike_spec.event_time(july)))
    weighed = pd.Series(against.weights).groupby(reference_cells).sum()
    expected = pd.Series(window_cells).value_counts(normalize=True)
    pd.testing.assert_series_equal(weighed[weighed > 0].sort_index(), expected.sort_index(), check_names=False)
    assert set(pd.to_datetime(against.used["dteday"]).dt.month) == {6, 7, 8}  # summer rows only


def test_a_summer_window_drifts_against_the_whole_year_but_not_against_a_seasonal_reference(
    training: pd.DataFrame, july: pd.DataFrame, bike_spec: DatasetSpec
) -> None:
    whole = numeric_psi(training[SEASONAL], july[SEASONAL])
    seasonal = {
        kind: numeric_psi(against.rows[SEASONAL], july[SEASONAL], against.weights)
        for kind in ("profile", "year_ago")
        for against in [drift_reference.build(training, july, bike_spec, kind)]
    }
    assert whole > 1  # the calendar, not the feed
    # The same days a year earlier match; a three-month season is coarser (July is its warmest month).
    assert seasonal["year_ago"] < 0.05 and seasonal["profile"] < whole / 10, (whole, seasonal)


def test_year_ago_uses_the_same_days_a_year_earlier_and_says_when_history_is_too_short(
    training: pd.DataFrame, july: pd.DataFrame, bike_spec: DatasetSpec
) -> None:
    against = drift_reference.build(training, july, bike_spec, "year_ago")
    used = pd.to_datetime(against.used["dteday"])
    assert (
        against.kind == "year_ago"
        and used.min() >= pd.Timestamp("2011-07-02")
        and used.max() <= pd.Timestamp("2011-07-29")
    )
    assert "2011-07-02 to 2011-07-29" in against.note
    short = drift_reference.build(_days(training, "2011-09-01", "2011-12-31"), july, bike_spec, "year_ago")
    assert short.kind == "profile" and "fewer than 100 rows a year before" in short.note


@pytest.fixture(scope="module")
def settings() -> Monitor:
    return Monitor(reference="profile", window_days=28, alarms_per_quarter=1.0, feature_psi=0.2)


@pytest.fixture(scope="module")
def calibrated(training: pd.DataFrame, bike_spec: DatasetSpec, settings: Monitor) -> Calibration:
    return calibrate(training, bike_spec, settings, "m")  # the model the windows below are logged for


def test_each_limit_sits_at_its_share_of_the_target_quantile_of_healthy_windows_never_below_its_floor(
    calibrated: Calibration, training: pd.DataFrame, bike_spec: DatasetSpec, settings: Monitor
) -> None:
    table = window_psis(training, bike_spec, settings)
    assert calibrated.windows == len(table) > 30
    assert calibrated.quantile == pytest.approx(target_quantile(settings), abs=1e-4)
    floors = {"psi": 0.2, "tail_share": TAIL_FLOOR, "residual_tail": TAIL_FLOOR, "unseen_share": TAIL_FLOOR,
              "unseen_pairs": TAIL_FLOOR, "longest_run": RUN_FLOOR}  # fmt: skip
    fed = set(feed_features(bike_spec))
    assert {name for name, limits in calibrated.limits.items() if "tail_share" in limits} == fed
    # Values off the grid are counted for the feeds of a fixed resolution, not for the synthetic continuous one.
    assert {name for name, limits in calibrated.limits.items() if "unseen_share" in limits} == fed - {SEASONAL}
    assert {name for name, limits in calibrated.limits.items() if "unseen_pairs" in limits} == set(
        bike_spec.features.categorical
    )
    for name, limits in calibrated.limits.items():
        each = statistic_quantile(calibrated.quantile, len(limits))
        for statistic, limit in limits.items():
            values = table[name if statistic == "psi" else f"{name}:{statistic}"]
            expected = max(floors[statistic], np.quantile(values.dropna(), each, method="higher"))
            assert limit == pytest.approx(expected, abs=1e-4), (name, statistic)
        # Healthy windows of the training year: the feature alarms at most at the target rate, all statistics
        # together (a union is at most the sum of its parts).
        alarmed = pd.concat([table[name if s == "psi" else f"{name}:{s}"] >= v if s == "psi" else
                             table[f"{name}:{s}"] > v for s, v in limits.items()], axis=1).any(axis=1)  # fmt: skip
        assert alarmed.mean() <= 1 - calibrated.quantile + 1e-9, name


def test_calibrated_thresholds_silence_healthy_seasons_of_the_next_year(
    calibrated: Calibration, training: pd.DataFrame, hours: pd.DataFrame, bike_spec: DatasetSpec, settings: Monitor
) -> None:
    """The seasonal feature over 2012 in four-week windows: flat 0.2 against the whole year rings nearly
    always; the profile at its calibrated threshold at most once a quarter."""
    flat, tuned = 0, 0
    for start in pd.date_range("2012-01-02", "2012-12-03", freq="28D"):
        window = _days(hours, start, start + pd.Timedelta(days=27))
        flat += numeric_psi(training[SEASONAL], window[SEASONAL]) >= 0.2
        against = drift_reference.build(training, window, bike_spec, "profile")
        tuned += (
            numeric_psi(against.rows[SEASONAL], window[SEASONAL], against.weights) >= calibrated.thresholds[SEASONAL]
        )
    assert flat >= 10 and tuned <= 4, (flat, tuned)


def test_the_calibration_judges_only_windows_of_the_settings_it_was_made_for(
    calibrated: Calibration, training: pd.DataFrame, july: pd.DataFrame, bike_spec: DatasetSpec, settings: Monitor
) -> None:
    logged = july.assign(model="m", role="champion", row_key=range(len(july)), event_time=july["dteday"])
    truth = pd.DataFrame({"row_key": pd.Series(dtype=object), "actual": pd.Series(dtype="float64")})
    window = {"model": "m", "start": "2012-07-02", "end": "2012-07-29"}
    judged = judge_window(training, logged, truth, bike_spec, thresholds=settings, calibration=calibrated, **window)
    thresholds = judged.drift.set_index("feature")["threshold"]
    assert thresholds.to_dict() == {name: calibrated.thresholds[name] for name in thresholds.index}
    runs = judged.drift.set_index("feature")["run_threshold"].dropna()
    assert runs.to_dict() == {name: calibrated.limits[name]["longest_run"] for name in runs.index} and len(runs) == 4
    assert judged.prediction_threshold == calibrated.prediction["threshold"]
    assert "calibrated on" in judged.calibration_note and "profile" in judged.reference_note
    other = settings.model_copy(update={"alarms_per_quarter": 2.0})
    flat = judge_window(training, logged, truth, bike_spec, thresholds=other, calibration=calibrated, **window)
    assert set(flat.drift["threshold"]) == {0.2} and "not for these settings" in flat.calibration_note
    other = judge_window(training, logged.assign(model="n"), truth, bike_spec, thresholds=settings,
                         calibration=calibrated, **{**window, "model": "n"})  # fmt: skip
    assert set(other.drift["threshold"]) == {0.2} and "the thresholds are m's, not n's" in other.calibration_note
    short = judge_window(training, logged.head(72), truth, bike_spec, thresholds=settings, calibration=calibrated,
                         model="m", start="2012-07-02", end="2012-07-04")  # fmt: skip
    assert "this window is 3 days" in short.calibration_note


def test_a_calibration_survives_its_file_and_too_short_a_history_is_refused(
    calibrated: Calibration, training: pd.DataFrame, bike_spec: DatasetSpec, settings: Monitor, tmp_path
) -> None:
    assert Calibration.load(calibrated.save(tmp_path / "t.json")) == calibrated
    assert Calibration.load(tmp_path / "absent.json") is None
    with pytest.raises(ValueError, match="too short a history"):
        calibrate(_days(training, "2011-03-01", "2011-03-31"), bike_spec, settings, "bike:test")


def test_the_longest_run_ends_where_the_value_or_the_series_changes_and_missing_values_never_run() -> None:
    assert longest_run(pd.Series([1.0, 1.0, 2.0, 2.0, 2.0, 1.0])) == 3
    assert longest_run(pd.Series([5.0, 5.0, 5.0, 5.0]), np.array([0, 0, 1, 1])) == 2
    assert longest_run(pd.Series([np.nan, np.nan, np.nan, 1.0])) == 1


def test_runs_end_at_a_gap_in_time_and_a_sample_of_a_history_is_not_contiguous(
    training: pd.DataFrame, bike_spec: DatasetSpec
) -> None:
    hours = _days(training, "2011-07-10", "2011-07-11").sort_values(["dteday", "hr"]).assign(hum=50.0)
    assert len(hours) == 48  # two whole days
    assert window_statistics(hours, hours, bike_spec)["hum"]["longest_run"] == 48
    gapped = hours.drop(index=hours.index[20:22])  # two hours missing: the feed was down, not stuck
    assert window_statistics(hours, gapped, bike_spec)["hum"]["longest_run"] == 26
    assert contiguous(bike_spec, training) and not contiguous(bike_spec, training.sample(frac=0.3, random_state=0))


def test_a_profile_without_the_windows_season_falls_back_and_says_so(
    training: pd.DataFrame, july: pd.DataFrame, bike_spec: DatasetSpec
) -> None:
    """Training rows of January to April only: no summer cell for July. Comparing July with no rows at all would
    flag every feature; the profile falls back to hours of the week, and the note says why."""
    winter = _days(training, "2011-01-01", "2011-04-30")
    against = drift_reference.build(winter, july, bike_spec, "profile")
    assert against.weights.sum() == pytest.approx(1) and "hour-of-week profile" in against.note
    assert "matches only 0% of the window's rows" in against.note
    no_time = drift_reference.build(winter.drop(columns=["hr"]), july, bike_spec, "profile")
    assert no_time.kind == "training" and "no event time" in no_time.note


def test_the_tail_share_counts_values_beyond_the_references_half_percent_tails() -> None:
    reference = pd.Series(np.arange(1000, dtype=float))
    assert tail_share(reference, pd.Series([500.0, 600.0])) == 0
    assert tail_share(reference, pd.Series([500.0, 2000.0, -50.0, 700.0])) == 0.5
    # Weighted: only the upper half of the reference counts, so 100 is now far below its tail.
    upper = np.where(np.arange(1000) >= 500, 1.0, 0.0)
    assert tail_share(reference, pd.Series([100.0, 800.0]), upper / upper.sum()) == 0.5


def test_a_stuck_feed_is_flagged_by_its_run_though_its_psi_stays_under_the_threshold(
    calibrated: Calibration, training: pd.DataFrame, july: pd.DataFrame, bike_spec: DatasetSpec, settings: Monitor
) -> None:
    """Two days of one humidity value in a healthy four-week window: PSI barely moves, the run gives it away."""
    stuck = july.copy()
    day = ((stuck["dteday"] >= "2012-07-20") & (stuck["dteday"] <= "2012-07-21")).to_numpy()
    stuck.loc[day, "hum"] = stuck.loc[day, "hum"].iloc[0]
    logged = stuck.assign(model="m", role="champion", row_key=range(len(stuck)), event_time=stuck["dteday"])
    truth = pd.DataFrame({"row_key": pd.Series(dtype=object), "actual": pd.Series(dtype="float64")})
    judged = judge_window(training, logged, truth, bike_spec, thresholds=settings, calibration=calibrated,
                          model="m", start="2012-07-02", end="2012-07-29").drift.set_index("feature")  # fmt: skip
    assert judged.loc["hum", "psi"] < judged.loc["hum", "threshold"]
    assert judged.loc["hum", "longest_run"] >= 48 > judged.loc["hum", "run_threshold"]
    assert judged.loc["hum", "drifted"] and judged.loc["hum", "signals"] == "longest_run"
    verdict = judge_window(training, logged, truth, bike_spec, thresholds=settings, calibration=calibrated,
                           model="m", start="2012-07-02", end="2012-07-29")  # fmt: skip
    assert "feed_faults" in verdict.crossed and verdict.exit_code == 4  # one stuck feature alarms on its own
    # The same hours logged twice (the API, then the batch) are one feed: the run is not doubled.
    twice = judge_window(training, pd.concat([logged, logged]), truth, bike_spec, thresholds=settings,
                         calibration=calibrated, model="m", start="2012-07-02", end="2012-07-29")  # fmt: skip
    assert twice.drift.set_index("feature").loc["hum", "longest_run"] == judged.loc["hum", "longest_run"]


def test_a_unit_change_beyond_the_references_tails_is_flagged_though_its_psi_stays_under_the_threshold(
    calibrated: Calibration, training: pd.DataFrame, july: pd.DataFrame, bike_spec: DatasetSpec, settings: Monitor
) -> None:
    """Five days of humidity sent as a fraction (0.7) instead of a percentage (70): the lowest decile bin
    grows, under the calibrated PSI threshold; but those values lie far beyond the reference's tails, and far
    from what the other weather features say humidity should be."""
    changed = july.copy()
    days = (changed["dteday"] >= "2012-07-20") & (changed["dteday"] <= "2012-07-24")
    changed.loc[days, "hum"] = changed.loc[days, "hum"] / 100
    logged = changed.assign(model="m", role="champion", row_key=range(len(changed)), event_time=changed["dteday"])
    truth = pd.DataFrame({"row_key": pd.Series(dtype=object), "actual": pd.Series(dtype="float64")})
    judged = judge_window(training, logged, truth, bike_spec, thresholds=settings, calibration=calibrated,
                          model="m", start="2012-07-02", end="2012-07-29").drift.set_index("feature")  # fmt: skip
    hum = judged.loc["hum"]
    assert hum["psi"] < hum["threshold"] and hum["drifted"]
    assert hum["tail_share"] >= days.mean() > hum["tail_threshold"]
    assert {"tail_share", "residual_tail"} <= set(hum["signals"].split(", "))


def test_the_unseen_share_counts_values_off_a_feeds_grid_and_skips_continuous_feeds() -> None:
    whole = pd.Series(np.repeat(np.arange(100.0), 20))  # whole numbers, each 20 times: a fixed resolution
    assert unseen_share(whole, pd.Series([3.0, 50.0, 99.0])) == 0
    assert unseen_share(whole, pd.Series([3.0, 50.0 / 3.6, 70.0, np.nan, 120.0])) == 0.5  # missing: not a value
    continuous = pd.Series(np.random.default_rng(0).normal(size=2000))  # every value new: nothing to say
    assert np.isnan(unseen_share(continuous, continuous.iloc[:10] + 1e-3))


def test_unseen_pairs_counts_labels_that_contradict_a_frequent_partner_and_leaves_rare_ones_alone() -> None:
    day = np.repeat(["Mon", "Sat"], [500, 300])
    reference = pd.DataFrame({"kind": np.where(day == "Sat", "weekend", "work"), "day": day})
    window = pd.DataFrame({"kind": ["work", "weekend", "weekend", "work"], "day": ["Mon", "Sat", "Mon", "Sat"]})
    # weekend on a Monday: expected 500 x 3/8 = 188 times if unrelated, never seen; work on a Saturday likewise.
    assert unseen_pairs(reference, window)["kind"] == 0.5
    # A partner too rare to say anything: 3 Sundays, all weekend; a Sunday at work would come 3 x 500 / 803 = 1.9
    # times if unrelated, under PAIR_EXPECTED: not judged.
    rare = pd.concat([reference, pd.DataFrame({"kind": ["weekend"] * 3, "day": ["Sun"] * 3})], ignore_index=True)
    assert unseen_pairs(rare, pd.DataFrame({"kind": ["work"], "day": ["Sun"]}))["kind"] == 0


def _judged(calibrated: Calibration, training: pd.DataFrame, window: pd.DataFrame, spec: DatasetSpec,
            settings: Monitor) -> tuple[pd.DataFrame, object]:  # fmt: skip
    logged = window.assign(model="m", role="champion", row_key=range(len(window)), event_time=window["dteday"])
    truth = pd.DataFrame({"row_key": pd.Series(dtype=object), "actual": pd.Series(dtype="float64")})
    verdict = judge_window(training, logged, truth, spec, thresholds=settings, calibration=calibrated, model="m",
                           start="2012-07-02", end="2012-07-29")  # fmt: skip
    return verdict.drift.set_index("feature"), verdict


def test_two_days_of_a_unit_change_are_flagged_off_the_feeds_grid_where_psi_and_the_tails_see_weather(
    calibrated: Calibration, training: pd.DataFrame, july: pd.DataFrame, bike_spec: DatasetSpec, settings: Monitor
) -> None:
    """Two days of wind speed sent in m/s instead of km/h (x 1/3.6) in a healthy four-week window: calm days look
    the same to PSI, to the tails and to the residual; but the feed's values step on a grid, and these are off it."""
    changed = july.copy()
    days = ((changed["dteday"] >= "2012-07-20") & (changed["dteday"] <= "2012-07-21")).to_numpy()
    changed.loc[days, "windspeed"] = changed.loc[days, "windspeed"] / 3.6
    wind = _judged(calibrated, training, changed, bike_spec, settings)[0].loc["windspeed"]
    assert wind["psi"] < wind["threshold"] and wind["tail_share"] <= wind["tail_threshold"]
    assert wind["residual_tail"] <= wind["residual_threshold"]
    assert wind["unseen_share"] > wind["unseen_threshold"] and wind["signals"] == "unseen_share"
    healthy = _judged(calibrated, training, july, bike_spec, settings)[0].loc["windspeed"]
    assert healthy["unseen_share"] <= healthy["unseen_threshold"] and not healthy["drifted"]


def test_two_days_of_a_relabelled_season_are_flagged_by_the_month_they_contradict(
    calibrated: Calibration, training: pd.DataFrame, july: pd.DataFrame, bike_spec: DatasetSpec, settings: Monitor
) -> None:
    """The example's July hours carry one season label; two days of another (a feed that switched its labels)
    move the season's PSI less than its calibrated threshold, but that label never comes in July."""
    changed = july.copy()
    days = ((changed["dteday"] >= "2012-07-20") & (changed["dteday"] <= "2012-07-21")).to_numpy()
    other = next(label for label in training["season"].unique() if label != july["season"].iloc[0])
    changed.loc[days, "season"] = other
    assert "<month>" in label_contexts(bike_spec, changed)
    judged, verdict = _judged(calibrated, training, changed, bike_spec, settings)
    season = judged.loc["season"]
    assert season["psi"] < season["threshold"] and season["unseen_pairs"] == pytest.approx(days.mean())
    assert season["signals"] == "unseen_pairs" and "feed_faults" in verdict.crossed and verdict.exit_code == 4
    assert _judged(calibrated, training, july, bike_spec, settings)[0].loc["season", "unseen_pairs"] == 0


def test_a_holiday_on_a_weekday_the_reference_never_had_one_on_is_no_feed_fault(
    calibrated: Calibration, training: pd.DataFrame, july: pd.DataFrame, bike_spec: DatasetSpec, settings: Monitor
) -> None:
    """2012's Independence Day fell on a Wednesday; 2011 had no holiday on a Wednesday, so its Wednesdays are all
    working days. The replay of 2012 flagged weekday and workingday as a feed fault for that healthy window: the day
    off on a Wednesday is explained by the holiday, a pair too rare in the reference to judge."""
    assert not ((training["weekday"] == "Wed") & (training["holiday"] == "Yes")).any()
    judged, verdict = _judged(calibrated, training, july, bike_spec, settings)
    assert judged["unseen_pairs"].fillna(0).eq(0).all(), judged["unseen_pairs"]
    assert "feed_faults" not in verdict.crossed
    # The same day with the holiday taken away (a Wednesday off for no reason) still contradicts its weekday.
    changed = july.copy()
    independence_day = (changed["dteday"] == "2012-07-04").to_numpy()
    changed.loc[independence_day, "holiday"] = "No"
    judged = _judged(calibrated, training, changed, bike_spec, settings)[0]
    assert judged.loc["workingday", "unseen_pairs"] == pytest.approx(independence_day.mean())


def test_a_limit_is_rounded_up_so_a_healthy_windows_own_value_never_crosses_it() -> None:
    from tiffin.lifecycle.calibration import _limit

    assert _limit(pd.Series([0.0, 24 / 672]), 1.0, 0.02) == 0.0358 > 24 / 672


def test_monitor_without_a_window_is_a_usage_error_and_calibrate_needs_none() -> None:
    from click.testing import CliRunner

    from tiffin.cli.main import main

    missing = CliRunner().invoke(main, ["monitor", "--end", "2012-12-01"])
    assert missing.exit_code == 2 and "Missing option '--start'" in missing.output
    helped = CliRunner().invoke(main, ["monitor", "calibrate", "--help"])
    assert helped.exit_code == 0 and "--start" not in helped.output and "false-alarm rate" in helped.output
