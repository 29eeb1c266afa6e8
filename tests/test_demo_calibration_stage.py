"""The demo's calibration stage (`demo_stages.calibrate_cure`) without a model: `calibrate` is
replaced by a stand-in, so what is tested is how the stage reacts to `--select balance` refusing.
The refusal is recognised by its type (OperatingPointRefused), whatever its message says."""

from __future__ import annotations

import pytest

from tfmaskrcnn.cli import calibrate as calibrate_cli
from tfmaskrcnn.cli import demo_stages
from tfmaskrcnn.serving import calibration as norcal

NAMES = ["square", "circle"]


def _fitted(gamma: float) -> norcal.Calibration:
    """What calibrate returns after fitting F1 thresholds (one class fell back to the global 0.5)."""
    details = [
        {
            "class": "square",
            "threshold": 0.42,
            "precision": 0.8,
            "recall": 0.6,
            "f1": 0.6857,
            "num_objects": 20,
            "fallback": False,
            "reason": None,
            "global": {"precision": 0.9, "recall": 0.4, "f1": 0.5538},
        },
        {
            "class": "circle",
            "threshold": 0.5,
            "precision": None,
            "recall": None,
            "f1": None,
            "num_objects": 2,
            "fallback": True,
            "reason": "2 objects < --min-objects 5",
            "global": {"precision": None, "recall": None, "f1": None},
        },
    ]
    return norcal.Calibration(
        gamma=gamma,
        class_names=list(NAMES),
        class_counts=[30, 3],
        source={"images": 12},
        score_thresholds=[0.42, 0.5],
        threshold_details=details,
        threshold_fit={
            "rule": "f1",
            "match": "segm",
            "global_threshold": 0.5,
            "fallbacks": ["circle"],
            "alarm_at_global_threshold": "ok",
            "alarm_at_thresholds": "ok",
        },
    )


@pytest.fixture
def stage(tmp_path, monkeypatch):
    """Runs the stage with `calibrate` replaced by `behaviour(call_number, kwargs)`; returns the
    stage's result and the calls made."""

    def run(behaviour):
        calls = []

        def fake_calibrate(model_dir, data, **kwargs):
            calls.append({"model_dir": model_dir, "data": data, **kwargs})
            return behaviour(len(calls), kwargs)

        monkeypatch.setattr(calibrate_cli, "calibrate", fake_calibrate)
        ctx = demo_stages.Context(output=str(tmp_path), seed=0, steps=6, progress=False)
        cure = {"model_dir": str(tmp_path / "runs" / "cure")}
        result = demo_stages.calibrate_cure(ctx, cure, {demo_stages.CALIB_SPLIT: "calib/*.tfrecord"})
        return result, calls

    return run


def test_a_typed_refusal_keeps_gamma_0_and_still_fits_the_thresholds(stage, capsys):
    # A message in words the stage has never seen: only the type says it is the balance refusal.
    message = "balance cannot judge: every gamma left the model silent"

    def behaviour(n, kwargs):
        if n == 1:
            assert kwargs["select"] == "balance"
            raise norcal.OperatingPointRefused(message, table=[{"gamma": 0.0}])
        return _fitted(0.0)

    result, calls = stage(behaviour)
    assert len(calls) == 2
    assert calls[0]["gammas"] == demo_stages.CALIB_GAMMAS and calls[0]["select"] == "balance"
    # The retry: γ 0 only (the model as trained), selected by AP, the same threshold rule.
    assert tuple(calls[1]["gammas"]) == (0.0,) and calls[1]["select"] == "ap"
    assert calls[1]["thresholds"] == demo_stages.CALIB_RULE == calls[0]["thresholds"]
    assert result["select"] == "ap" and result["gamma"] == 0.0
    assert message in result["note"] and "γ 0 kept" in result["note"]
    assert result["score_thresholds"] == {"square": 0.42, "circle": 0.5}
    assert result["fallbacks"] == ["circle"]
    assert result["held_out"]["square"]["num_objects"] == 20
    assert message in capsys.readouterr().out


def test_without_a_refusal_the_balance_choice_stands(stage):
    result, calls = stage(lambda n, kwargs: _fitted(0.25))
    assert len(calls) == 1
    assert result["select"] == demo_stages.CALIB_SELECT == "balance"
    assert result["gamma"] == 0.25 and result["note"] is None


def test_another_value_error_is_not_taken_for_a_refusal_even_with_the_refusals_words(stage):
    # The old text match would have swallowed this one; the type check lets it through.
    def behaviour(n, kwargs):
        raise ValueError("no γ gave a confident detection at the score threshold (but from elsewhere)")

    with pytest.raises(ValueError, match="from elsewhere") as raised:
        stage(behaviour)
    assert not isinstance(raised.value, norcal.OperatingPointRefused)


def test_choose_gamma_raises_the_typed_refusal_with_the_table():
    table = [
        {
            "gamma": 0.0,
            "mean_per_class_AP": 0.3,
            "operating_point": {"confident_detections": 0, "max_share_ratio": None},
        },
        {
            "gamma": 0.5,
            "mean_per_class_AP": 0.2,
            "operating_point": {"confident_detections": 0, "max_share_ratio": None},
        },
    ]
    with pytest.raises(norcal.OperatingPointRefused) as raised:
        norcal.choose_gamma(table, "balance")
    assert isinstance(raised.value, ValueError)  # the CLI's `except ValueError` still reports it
    assert [row["gamma"] for row in raised.value.table] == [0.0, 0.5]
    assert raised.value.reason == norcal.OperatingPointRefused.NO_CONFIDENT_DETECTION
    assert norcal.choose_gamma(table, "ap") == 0.0  # AP selection does not refuse
