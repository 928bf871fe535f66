"""spheroid-hpo: hyperparameter optimisation for CNNs that classify spheroid microscopy images."""

__version__ = "0.1.0"
