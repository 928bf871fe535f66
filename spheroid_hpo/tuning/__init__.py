"""Everything that speaks Optuna: study files, the trial records, storage, studies, workers.

Kept empty so that importing one module here (``tuning.study_file``) loads nothing else.
"""
