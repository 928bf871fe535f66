"""One training run in plain PyTorch: models, the loop, device and precision, inference, metrics.

Never imports optuna or the study file. Kept empty so that importing one module here
(``training.hyperparams``) loads nothing else.
"""
