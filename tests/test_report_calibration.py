"""The report states each best trial's calibration (ECE before/after, reliability diagram) and TTA macro-F1."""

from __future__ import annotations

from spheroid_hpo.results.report import write_report


def test_report_shows_ece_before_and_after_reliability_and_tta_macro_f1(finished_study, tmp_path):
    result = write_report(
        study=finished_study.name, storage_url=finished_study.storage_url, out_dir=tmp_path / "report",
        artifact_dir=finished_study.artifact_dir, runs_dir=finished_study.runs_dir, device="cpu",
    )
    markdown = (result.out_dir / "report.md").read_text()
    assert "## Calibrated probabilities and test-time augmentation" in markdown
    assert "test macro-F1 with TTA" in markdown and "validation ECE" in markdown and "→" in markdown
    for architecture, evaluation in result.evaluations.items():
        assert evaluation.tta_metrics is not None and 0 <= evaluation.tta_metrics.macro_f1 <= 1
        scores = evaluation.calibration.scores["test"]
        assert {"ece_before", "ece_after", "nll_before", "nll_after"} <= set(scores)
        assert f"{evaluation.calibration.temperature:.2f}" in markdown
        assert (result.out_dir / "figures" / f"{architecture}-reliability.png").stat().st_size > 0
        assert f"figures/{architecture}-reliability.png" in markdown
