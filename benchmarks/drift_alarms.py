"""`make bench` (drift part): false alarms on healthy data, and detection of injected feed faults.

The setting of the replay (`tiffin simulate` over the test year): the model's reference is the rows before
the replayed year (here: the pipeline's canonical rows, history features included, before `--start`), the
thresholds are calibrated on them (`monitor` params: reference, window size, target rate), and the replayed
year is cut into consecutive monitoring windows of `window_days`.

- False alarms: per feature, the windows of the healthy year whose PSI reaches the feature's threshold,
  counted per quarter, for each reference kind (the training reference at the flat 0.2 is today's monitor).
- Detection: `--cases` faults from a random hour of the year (fixed seed), each kept until the end of the
  data: a unit change of a numeric feature (x 1/3.6, as km/h read as m/s; rows then out of the contract's
  range are refused by it and never reach the log), a relabelled category (the most common label sent as
  the second most common), a stuck value (the feature's value at the fault hour, from then on). A faulty hour
  is one whose sent value differs from the true one (a relabel of a label the feed no longer sends, or a value
  stuck at what it would have been, sends nothing wrong): a drawn fault that never gives 24 faulty hours in one
  window is redrawn, and counted. A case is detected when its feature is flagged (or the contract refuses its
  rows) in the first window that holds >= 24 faulty hours.

Writes reports/drift/{false_alarms.csv, detection.csv, summary.json, summary.md, chart.png}.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from tiffin.core.contract import Contract
from tiffin.core.params import Monitor
from tiffin.core.spec import DatasetSpec, load_spec
from tiffin.lifecycle import drift_reference
from tiffin.lifecycle.calibration import calibrate
from tiffin.lifecycle.drift import drift_table
from tiffin.storage import paths
from tiffin.storage.files import read_parquet
from tiffin.storage.settings import load_params

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports/drift"
FAULTS = ("unit_change", "relabel", "stuck")
UNIT_FACTOR = 1 / 3.6
MIN_FAULTY_HOURS = 24
Limits = dict[str, dict[str, float]]


def canonical_rows(spec: DatasetSpec) -> pd.DataFrame:
    """Every canonical row of the pipeline (train, validation, test), in time order, with its event time."""
    rows = pd.concat([read_parquet(path) for path in paths.SPLITS.values()], ignore_index=True)
    rows = rows.assign(prediction=0.0, _time=pd.to_datetime(spec.event_time(rows)))
    return rows.sort_values("_time", ignore_index=True)


def monitoring_windows(times: pd.Series, start: pd.Timestamp, days: int) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Consecutive windows of `days` from `start` to the last row (a last stub under half a window joins the one
    before, as `tiffin simulate` does)."""
    edges = list(pd.date_range(start, times.max() + pd.Timedelta(hours=1), freq=f"{days}D"))
    if (times.max() - edges[-1]).days < days // 2 and len(edges) > 1:
        edges.pop()
    ends = [*edges[1:], times.max() + pd.Timedelta(hours=1)]
    return list(zip(edges, ends, strict=True))


def judge(reference: pd.DataFrame, window: pd.DataFrame, spec: DatasetSpec, settings: Monitor,
          limits: Limits | None) -> pd.DataFrame:  # fmt: skip
    against = drift_reference.build(reference, window, spec, settings.reference, settings.min_rows)
    return drift_table(against.rows, window, spec, settings.feature_psi, against.weights, limits)


def false_alarms(reference: pd.DataFrame, year: pd.DataFrame, spec: DatasetSpec, settings: Monitor,
                 limits: Limits | None, windows: list) -> pd.DataFrame:  # fmt: skip
    """One row per (window, feature): its PSI, threshold and whether it alarmed."""
    frames = []
    for start, end in windows:
        window = year[(year["_time"] >= start) & (year["_time"] < end)]
        table = judge(reference, window, spec, settings, limits)
        frames.append(table.assign(start=start, quarter=f"{start.year}Q{start.quarter}"))
    return pd.concat(frames, ignore_index=True)


def feed_features(spec: DatasetSpec) -> dict[str, list[str]]:
    """The features a feed sends (not the event time's own columns, not history: those are computed)."""
    timing = {spec.timestamp.column, spec.timestamp.hour}
    return {"numeric": [n for n in spec.features.numeric if n not in timing], "categorical": spec.features.categorical}


def inject(year: pd.DataFrame, case: dict, contract: Contract, spec: DatasetSpec
           ) -> tuple[pd.DataFrame, pd.Series, pd.Series]:  # fmt: skip
    """The year with the case's fault from its hour on, less the rows the contract then refuses (the batch
    keeps those in prediction_rejects, with the field and rule: they never reach the log); the times of the
    faulty hours (sent with a wrong value); and of those the contract refused."""
    faulty = year["_time"] >= case["hour"]
    name, changed = case["feature"], year.copy()
    if case["fault"] == "unit_change":
        changed.loc[faulty, name] = changed.loc[faulty, name] * UNIT_FACTOR
    elif case["fault"] == "stuck":
        changed.loc[faulty, name] = changed.loc[faulty, name].iloc[0]
    else:
        common = year[name].value_counts().index
        changed.loc[faulty & (year[name] == common[0]), name] = common[1]
    sent = changed.loc[faulty, spec.input_columns]
    refused = sent.index[contract.validate(sent, serving=True).rejects["row"].unique()]
    wrong = faulty & (changed[name].astype(str) != year[name].astype(str))
    return changed.drop(index=refused), changed.loc[wrong, "_time"], changed.loc[refused, "_time"]


def cases(year: pd.DataFrame, spec: DatasetSpec, seed: int) -> Iterator[dict]:
    """Faults without end, kinds in turn, features and hours drawn at random (the last 24 hours excluded)."""
    random, features = np.random.default_rng(seed), feed_features(spec)
    hours = year["_time"][year["_time"] <= year["_time"].max() - pd.Timedelta(hours=MIN_FAULTY_HOURS)]
    relabelled = [name for name in features["categorical"] if year[name].nunique() > 1]
    pools = {"unit_change": features["numeric"], "stuck": features["numeric"], "relabel": relabelled}
    kinds = [fault for fault in FAULTS if pools[fault]]  # a table without categories gets no relabel
    for number in itertools.count():
        fault = kinds[number % len(kinds)]
        yield {"draw": number, "fault": fault, "feature": str(random.choice(pools[fault])),
               "hour": pd.Timestamp(hours.iloc[random.integers(len(hours))])}  # fmt: skip


def first_faulty_window(windows: list, faulty: pd.Series) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The first monitoring window that holds at least MIN_FAULTY_HOURS faulty hours (None: none does)."""
    return next(((start, end) for start, end in windows
                 if ((faulty >= start) & (faulty < end)).sum() >= MIN_FAULTY_HOURS), None)  # fmt: skip


def detection(reference: pd.DataFrame, year: pd.DataFrame, spec: DatasetSpec, settings: Monitor,
              limits: Limits | None, windows: list, drawn: Iterator[dict], count: int) -> pd.DataFrame:  # fmt: skip
    """`count` cases (a drawn fault that gives no window MIN_FAULTY_HOURS faulty hours is redrawn, and kept in
    the table as `redrawn`)."""
    contract, records = Contract(spec), []
    while sum(not record["redrawn"] for record in records) < count:
        case = next(drawn)
        changed, faulty, refused = inject(year, case, contract, spec)
        found = first_faulty_window(windows, faulty)
        if found is None:
            records.append({**case, "redrawn": True})
            continue
        start, end = found
        window = changed[(changed["_time"] >= start) & (changed["_time"] < end)]
        table = judge(reference, window, spec, settings, limits).set_index("feature")
        row = table.loc[case["feature"]]
        # What `tiffin monitor` exits 4 on: a feed check over its limit, or more drifted features than allowed.
        too_many = table["drifted"].sum() > settings.max_drifted_features
        alarmed = bool(table["signals"].map(feed_signal).any() or too_many)
        faulty_here, refused_here = (int(((times >= start) & (times < end)).sum()) for times in (faulty, refused))
        by = "drift" if row["drifted"] else "contract" if refused_here >= MIN_FAULTY_HOURS else ""
        records.append({**case, "redrawn": False, "window_start": start, "faulty_hours": faulty_here,
                        "refused_by_contract": refused_here, "window_rows": len(window), "psi": row["psi"],
                        "threshold": row["threshold"], "signals": row["signals"], "detected_by": by,
                        "detected": bool(by), "monitor_alarms": alarmed or by == "contract"})  # fmt: skip
    return pd.DataFrame.from_records(records)


def feed_signal(signals: object) -> bool:
    """Whether a feature's signals name a feed check (any statistic but PSI): it alarms `tiffin monitor` alone."""
    return bool(set(str(signals or "").split(", ")) - {"psi", "", "nan"})


def monitor_alarm_windows(frame: pd.DataFrame, tuned: Monitor) -> int:
    """Healthy windows on which `tiffin monitor` would exit 4: a feed check, or too many drifted features."""
    per_window = frame.groupby("start").agg(
        feed=("signals", lambda found: found.map(feed_signal).any()), drifted=("drifted", "sum")
    )
    return int((per_window["feed"] | (per_window["drifted"] > tuned.max_drifted_features)).sum())


def chart(alarms: dict[str, pd.DataFrame], detected: pd.DataFrame, path: Path) -> None:
    """Left: the most alarms of each feature in one quarter of healthy data, per setting; right: the share of
    injected faults detected, per kind of fault and by what."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_quarter = pd.DataFrame({name: frame.groupby(["feature", "quarter"])["drifted"].sum().groupby("feature").max()
                                for name, frame in alarms.items()})  # fmt: skip
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 0.3 * len(per_quarter) + 2), width_ratios=[3, 2])
    per_quarter.plot.barh(ax=left, width=0.8)
    left.axvline(1, color="black", linestyle="--", label="goal: at most 1 per quarter")
    left.set_xlabel("most alarms of the feature in one quarter (healthy data)")
    left.set_title("False drift alarms over the replayed year")
    left.legend(fontsize=8)
    by = detected.assign(by=detected["detected_by"].fillna("").replace("", "missed"))
    shares = pd.crosstab(by["fault"], by["by"], normalize="index").reindex(columns=["drift", "contract", "missed"],
                                                                            fill_value=0)  # fmt: skip
    shares.plot.barh(ax=right, stacked=True, color=["#2ca02c", "#1f77b4", "#d62728"])
    right.axvline(0.95, color="black", linestyle="--", label="goal: 95 % detected")
    right.set_xlim(0, 1)
    right.set_xlabel(f"share of {len(detected)} faults (first window with >= 24 faulty hours)")
    right.set_title("Injected feed faults: detected by")
    right.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default="2012-01-01", help="First day of the replayed year.")
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="Override `monitor` params.")
    args = parser.parse_args()
    params = load_params(ROOT / paths.PARAMS)
    overrides = dict(item.split("=", 1) for item in args.set)
    spec, tuned = load_spec(ROOT / params["spec"]), Monitor.from_params({**params.get("monitor", {}), **overrides})
    rows, start = canonical_rows(spec), pd.Timestamp(args.start)
    reference, year = rows[rows["_time"] < start], rows[rows["_time"] >= start]
    windows = monitoring_windows(year["_time"], start, tuned.window_days)
    flat = tuned.model_copy(update={"reference": "training"})
    calibration = calibrate(reference, spec, tuned, "reference")
    alarms = {"training, flat threshold": false_alarms(reference, year, spec, flat, None, windows),
              f"{tuned.reference}, calibrated": false_alarms(reference, year, spec, tuned, calibration.limits,
                                                             windows)}  # fmt: skip
    detected = detection(reference, year, spec, tuned, calibration.limits, windows, cases(year, spec, args.seed),
                         args.cases)  # fmt: skip
    write(args.out, alarms, detected, calibration.limits, tuned)


def write(out: Path, alarms: dict[str, pd.DataFrame], drawn: pd.DataFrame, limits: Limits,
          tuned: Monitor) -> None:  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    pd.concat([frame.assign(setting=name) for name, frame in alarms.items()]).to_csv(out / "false_alarms.csv",
                                                                                    index=False)  # fmt: skip
    drawn.to_csv(out / "detection.csv", index=False)
    detected = drawn[~drawn["redrawn"]].astype({"detected": bool, "monitor_alarms": bool})
    chart(alarms, detected, out / "chart.png")
    summary = {
        "window_days": tuned.window_days, "alarms_per_quarter_target": tuned.alarms_per_quarter,
        "false_alarms": {name: {"windows": int(frame["start"].nunique()), "alarms": int(frame["drifted"].sum()),
                                "monitor_alarm_windows": monitor_alarm_windows(frame, tuned),
                                "most_per_feature_per_quarter": int(frame.groupby(["feature", "quarter"])["drifted"]
                                                                    .sum().max()),
                                "features_over_one_per_quarter": sorted(set(frame.groupby(["feature", "quarter"])
                                    ["drifted"].sum().loc[lambda s: s > 1].index.get_level_values(0)))}
                         for name, frame in alarms.items()},
        "detection": {"cases": len(detected), "redrawn": int(drawn["redrawn"].sum()),
                      "detected": int(detected["detected"].sum()),
                      "rate": round(float(detected["detected"].mean()), 4),
                      "monitor_alarms": int(detected["monitor_alarms"].sum()),
                      "by_fault": detected.groupby("fault")["detected"].mean().round(3).to_dict(),
                      "by_detector": detected["detected_by"].replace("", "missed").value_counts().to_dict()},
        "limits": limits,
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
