"""The project's own copy of the real data: what it is, and that it meets the contract."""

import hashlib

import pandas as pd

from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec

from ..conftest import ROOT

UPSTREAM_SHA256 = "37243617704e1f087a24c90449f64be6122b9de72ac0d15641fe3fba28402f1e"


def test_the_compressed_copy_is_the_published_file() -> None:
    import gzip

    raw = gzip.decompress((ROOT / "data/seed/bike_sharing_hourly.csv.gz").read_bytes())
    assert hashlib.sha256(raw).hexdigest() == UPSTREAM_SHA256


def test_every_real_row_meets_the_contract(bike_spec: DatasetSpec, bike_raw: pd.DataFrame) -> None:
    result = Contract(bike_spec).validate(bike_raw)
    assert result.rejects.empty, result.rejects.head()
    assert len(result.valid) == 17_379
    assert result.valid["weathersit"].isna().sum() == 1_258  # missing, kept, and nullable by contract
    assert result.valid["weekday"].notna().all()  # the 875 missing weekdays derived from the date


def test_the_target_is_the_sum_of_the_leakage_columns(bike_raw: pd.DataFrame) -> None:
    """Why casual and registered must never be inputs: together they are the answer."""
    assert (bike_raw["casual"] + bike_raw["registered"] == bike_raw["cnt"]).all()


def test_demand_drifts_between_the_years(bike_spec: DatasetSpec, bike_raw: pd.DataFrame) -> None:
    valid = Contract(bike_spec).validate(bike_raw).valid
    by_year = valid.groupby(valid["dteday"].dt.year)["cnt"].mean()
    assert by_year[2012] / by_year[2011] > 1.5
