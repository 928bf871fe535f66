"""Two items of the report's checklist on their own, in seconds: the trial counts are the trials'
states, and the label audit appears once its summary is written. tests/test_report_checklist.py
checks the whole checklist of a real finished study (and, slow, after a real audit); these are the
mutation check's quick witnesses."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from study_files import one_architecture_study

from spheroid_hpo.results.audit import AUDIT_DIR, audit_plan
from spheroid_hpo.results.audit._source import plan_from_run
from spheroid_hpo.results.report._checklist import NOT_RUN, RECORDED, _audit_item, _optimisation
from spheroid_hpo.results.report._summary import summarize_study
from spheroid_hpo.training.hyperparams import Hyperparams
from spheroid_hpo.training.run import run_training
from spheroid_hpo.tuning.study_file import parse_study_text


def test_the_trials_item_counts_each_state_of_each_architecture():
    config = parse_study_text(one_architecture_study(name="counts", n_trials=4), source=Path("counts.toml"))
    (architecture,) = config.architectures
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE)
    trials = [create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None,
                           params={"lr": 1e-3}, distributions={"lr": FloatDistribution(1e-4, 1e-2, log=True)},
                           intermediate_values={1: 0.3} if state == TrialState.PRUNED else None)
              for state in states]
    for number, trial in enumerate(trials):
        trial.number = number
    family = SimpleNamespace(config=config, trials=lambda name: trials)
    content = SimpleNamespace(family=family, summaries=(summarize_study(architecture, trials),))
    (item,) = [i for i in _optimisation(content) if i.item == "trials"]
    assert item.source == RECORDED
    assert item.value.startswith(f"{architecture}: 2 complete, 2 pruned, 1 failed, "), item.value


def test_the_label_audit_item_appears_once_the_audit_has_written_its_summary(demo_dir, tmp_path):
    study_dir = tmp_path / "runs" / "s"
    before = _audit_item(study_dir, "s")
    assert before.source == NOT_RUN and "audit-labels --study s" in before.value

    # A real audit.json: an audit of a 1-epoch run folder (each fold trains one epoch at 32 px).
    data = tmp_path / "data"
    shutil.copytree(demo_dir, data)
    run_training(data_dir=data, out_dir=tmp_path / "run", arch="squeezenet1_1", image_size=32, device="cpu",
                 hyperparams=Hyperparams(epochs=1, lr=1e-3, rotation=0.0, batch_size=8), progress=False)
    result = audit_plan(plan_from_run(tmp_path / "run", data_dir=None), folds=2, out_dir=study_dir / AUDIT_DIR,
                        device="cpu", log=lambda line: None)
    after = _audit_item(study_dir, "s")
    assert after.source == RECORDED
    assert after.value.startswith(f"{len(result.suspects)} of {len(result.held_out.paths)} train and validation "
                                  f"images flagged"), after.value
