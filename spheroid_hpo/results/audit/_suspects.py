"""Which given labels are probably wrong: cleanlab's confident learning on out-of-sample probabilities.

cleanlab estimates from the confident joint how many given labels are wrong
(``cleanlab.count.num_label_issues``) and, with ``filter_by="low_self_confidence"``, flags
that many images: those whose given label has the lowest out-of-sample probability. On demo
data like ``studies/ci.toml``'s with 5% of the labels flipped this held precision and recall
at 0.58 or more over three draws of the flips, where cleanlab's default
(``prune_by_noise_rate``) fell to 0.48 precision (BENCHMARKS.md, "Label audit").
"""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass

import numpy as np

from spheroid_hpo.results.audit._probabilities import HeldOut

# cleanlab's rule for which images are flagged, and its ranking of them: the given label's own
# probability, lowest first.
FILTER_BY = "low_self_confidence"
RANK_BY = "self_confidence"
CSV_COLUMNS = ("rank", "path", "split", "given_label", "given_probability", "suggested_label",
               "suggested_probability")


@dataclass(frozen=True)
class Suspect:
    """One image whose given label cleanlab flags, with the label the held-out model suggests."""

    rank: int  # 1 = most likely mislabelled
    index: int  # row in ``HeldOut``
    path: str
    split: str
    given_label: str
    given_probability: float
    suggested_label: str
    suggested_probability: float


def find_suspects(held_out: HeldOut) -> tuple[Suspect, ...]:
    """The images ``cleanlab.filter.find_label_issues`` flags, most likely mislabelled first."""
    from cleanlab.filter import find_label_issues

    with warnings.catch_warnings():
        # cleanlab warns about classes with few images; the audit still ranks what it can.
        warnings.simplefilter("ignore")
        ranked = find_label_issues(labels=held_out.labels, pred_probs=held_out.probabilities,
                                   filter_by=FILTER_BY, return_indices_ranked_by=RANK_BY, n_jobs=1)
    names = held_out.class_names
    suspects = []
    for rank, index in enumerate(np.asarray(ranked, dtype=int), start=1):
        given = int(held_out.labels[index])
        suggested = int(np.argmax(held_out.probabilities[index]))
        suspects.append(Suspect(
            rank=rank, index=int(index), path=held_out.paths[index], split=held_out.splits[index],
            given_label=names[given], given_probability=float(held_out.probabilities[index, given]),
            suggested_label=names[suggested], suggested_probability=float(held_out.probabilities[index, suggested]),
        ))
    return tuple(suspects)


def suspects_csv(suspects: tuple[Suspect, ...]) -> str:
    """The suspects as CSV text, one row each in rank order (probabilities to 4 decimals)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for s in suspects:
        writer.writerow((s.rank, s.path, s.split, s.given_label, f"{s.given_probability:.4f}", s.suggested_label,
                         f"{s.suggested_probability:.4f}"))
    return buffer.getvalue()
