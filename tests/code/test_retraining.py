"""The retraining triggers and the moved training window."""

from __future__ import annotations

from datetime import date

from tiffin.lifecycle.retraining import NewData, RetrainRules, moved_window, triggers, update_params

RULES = RetrainRules(min_new_hours=672, max_age_days=90, max_mae_ratio=1.5, min_metric_rows=100)


FACTS = {"trained_until": date(2012, 6, 30), "now": date(2012, 7, 14), "new_data": NewData(336, 1, 336),
         "production_mae": 40.0, "production_rows": 336, "test_mae": 40.0, "rules": RULES, "force": False}  # fmt: skip


def fired(**overrides: object) -> set[str]:
    return {t.name for t in triggers(**(FACTS | overrides)) if t.fired}


def test_no_trigger_fires_for_a_fresh_accurate_champion():
    assert fired() == set()


def test_each_trigger_fires_on_its_own():
    assert fired(new_data=NewData(672, 1, 672)) == {"new_data"}
    assert fired(now=date(2012, 10, 1)) == {"schedule"}
    assert fired(production_mae=61.0) == {"metric_drop"}
    assert fired(force=True) == {"request"}


def test_new_data_is_counted_in_hours_per_series_not_rows():
    """Friction 5 of issue 14: 672 rows from 21 sensors are 32 hours, not four weeks."""
    assert fired(new_data=NewData(rows=672, series=21, hours=32)) == set()
    assert fired(new_data=NewData(rows=21 * 672, series=21, hours=672)) == {"new_data"}
    detail = next(t.detail for t in triggers(**{**FACTS, "new_data": NewData(672, 21, 32)}) if t.name == "new_data")
    assert detail.startswith("32 hours of data per series (median of 21), 672 rows, after 2012-06-30")


def test_the_metric_drop_needs_enough_rows_with_actuals():
    assert fired(production_mae=100.0, production_rows=99) == set()
    assert fired(production_mae=None, production_rows=0) == set()
    facts = FACTS | {"now": date(2012, 7, 1), "new_data": NewData(0, 0, 0), "production_mae": 61.0,
                     "production_rows": 200}  # fmt: skip
    detail = next(t.detail for t in triggers(**facts) if t.name == "metric_drop")
    assert "1.52 x test MAE 40.00" in detail


def test_the_window_moves_to_the_new_end_with_the_latest_days_held_out():
    params = {"ingest": {"start": "2011-01-01", "end": "2011-12-31"},
              "split": {"validation_start": "2011-07-01", "test_start": "2011-10-01"}}  # fmt: skip
    rules = RetrainRules(holdout_days=28, validation_days=28)
    moved = {"ingest.end": "2012-03-31", "split.test_start": "2012-03-04", "split.validation_start": "2012-02-05"}
    assert moved_window(params, date(2012, 3, 31), rules) == moved
    shares = {"ingest": params["ingest"], "split": {"validation_share": 0.1, "test_share": 0.1}}
    assert moved_window(shares, date(2012, 3, 31), rules) == {"ingest.end": "2012-03-31"}


def test_params_are_updated_in_place_keeping_comments(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text('# top\ningest:\n  start: "2011-01-01"   # keep me\n  end: "2011-12-31"\ntrain:\n  max_iter: 300\n')
    update_params(path, {"ingest.end": "2012-03-31", "train.max_iter": 30})
    assert path.read_text() == (
        '# top\ningest:\n  start: "2011-01-01"   # keep me\n  end: "2012-03-31"\ntrain:\n  max_iter: 30\n'
    )
