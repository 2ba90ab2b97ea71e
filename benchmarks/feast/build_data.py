"""Build feature parquets for the Feast benchmark, in $FEAST_BENCH_DIR/data (default /tmp/feast-bench/data).

data/bike_a.parquet : series_id=0, one row per observed hour (17,379 rows)
data/bike_b.parquet : series_id 0..99, cnt * factor(k) with factor(k) = 1 + k/100 (~1.74 M rows)

Features (computed on a full hourly grid, missing hours -> NaN):
  lag_1, lag_2, lag_3, lag_24, lag_168 : cnt at t-1h, t-2h, t-3h, t-24h, t-168h
  mean_24                              : mean of cnt over t-24h .. t-1h (mean of the
                                         hours present in that window; NaN if none)
Only observed hours are kept as rows. event_timestamp = dteday + hr hours (UTC).
"""

import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

SRC = Path(__file__).resolve().parents[2] / "data/seed/bike_sharing_hourly.csv.gz"
OUT = os.path.join(os.environ.get("FEAST_BENCH_DIR", "/tmp/feast-bench"), "data")
N_SERIES = 100
FEATURES = ["lag_1", "lag_2", "lag_3", "lag_24", "lag_168", "mean_24"]


def parse_hr(v) -> int:
    """Accept ints (0-23), numeric strings, or '12am'/'1am'/.../'12pm'/'11pm'."""
    if isinstance(v, (int, np.integer)):
        h = int(v)
    else:
        s = str(v).strip().lower()
        m = re.fullmatch(r"(\d{1,2})\s*(am|pm)?", s)
        if not m:
            raise ValueError(f"unparseable hr: {v!r}")
        h = int(m.group(1))
        if m.group(2) == "am":
            h = 0 if h == 12 else h
        elif m.group(2) == "pm":
            h = 12 if h == 12 else h + 12
    if not 0 <= h <= 23:
        raise ValueError(f"hr out of range: {v!r}")
    return h


def build_single() -> pd.DataFrame:
    raw = pd.read_csv(SRC)
    hr = raw["hr"].map(parse_hr)
    ts = pd.to_datetime(raw["dteday"], format="%Y-%m-%d") + pd.to_timedelta(hr, unit="h")
    df = pd.DataFrame({"event_timestamp": ts, "cnt": raw["cnt"].astype("int64")})
    df = df.sort_values("event_timestamp").reset_index(drop=True)
    assert not df["event_timestamp"].duplicated().any(), "duplicate hours"

    grid_idx = pd.date_range(df["event_timestamp"].min(), df["event_timestamp"].max(), freq="h")
    g = df.set_index("event_timestamp")["cnt"].astype("float64").reindex(grid_idx)
    feats = pd.DataFrame(index=grid_idx)
    for L in (1, 2, 3, 24, 168):
        feats[f"lag_{L}"] = g.shift(L)
    # rows t-24h .. t-1h: rolling 24 on the grid, then shift by 1
    feats["mean_24"] = g.rolling(24, min_periods=1).mean().shift(1)
    feats = feats.loc[df["event_timestamp"]].reset_index(drop=True)
    out = pd.concat([df, feats], axis=1)
    out["event_timestamp"] = out["event_timestamp"].dt.tz_localize("UTC")
    out.insert(0, "series_id", np.int64(0))
    # extra key for the optional "full history" feature views (entity = series_id + hour_key)
    out["hour_key"] = (out["event_timestamp"].astype("int64") // 3_600_000_000_000).astype("int64")
    print(f"grid hours={len(grid_idx)} observed={len(df)} missing={len(grid_idx) - len(df)}")
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    t0 = time.perf_counter()
    a = build_single()
    a.to_parquet(f"{OUT}/bike_a.parquet", index=False)
    parts = []
    for k in range(N_SERIES):
        f = 1.0 + k / 100.0
        p = a.copy()
        p["series_id"] = np.int64(k)
        p["cnt"] = (p["cnt"] * f).round().astype("int64") if k else p["cnt"]
        for c in FEATURES:
            p[c] = p[c] * f  # features are linear in cnt -> scale directly
        parts.append(p)
    b = pd.concat(parts, ignore_index=True).sort_values(["event_timestamp", "series_id"], kind="stable")
    b.to_parquet(f"{OUT}/bike_b.parquet", index=False)
    print(f"a: {a.shape}  b: {b.shape}  built in {time.perf_counter() - t0:.1f}s")
    print(a.head(3).to_string())
    print(a[FEATURES].isna().sum().to_dict())


if __name__ == "__main__":
    sys.exit(main())
