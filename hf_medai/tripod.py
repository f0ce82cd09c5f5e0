"""The TRIPOD+AI checklist (Collins et al., BMJ 2024;385:e078378) for the Hub cards of predictive models.

TRIPOD+AI has 27 items for reporting clinical prediction models built with regression or machine learning. The
titles below are our own short paraphrases, not the statement's text. For each item, `tripod_rows` says where the
card reports it, or who has to supply it: a training run cannot know the clinical setting it will be used in,
the ethics approval of its data, or who funded it. No item is left out: the card's table always has 27 rows.
"""

from __future__ import annotations

from collections.abc import Mapping

from hf_medai.reporting_text import DEPLOYER, DEVELOPER

# (number, part of the paper, short title, where every card reports it, or None). Each kind of model
# (hf_medai.kinds) adds or replaces cells for its own card ({number: where}); an item reported by neither means
# the card does not report it, and the row says who must.
ITEMS: list[tuple[int, str, str, str | None]] = [
    (
        1,
        "Title",
        "Identify the study as developing or evaluating a prediction model, its population and outcome",
        "Title and first paragraph",
    ),
    (
        2,
        "Abstract",
        "Structured summary of objectives, data, methods, results and conclusions",
        "First paragraph and Evaluation (the card is not a paper: no structured abstract)",
    ),
    (
        3,
        "Introduction",
        "Clinical context, rationale, intended purpose and known inequalities the model may affect",
        "Intended use; Bias, risks and limitations",
    ),
    (
        4,
        "Introduction",
        "Objectives: development, validation or both",
        "First paragraph (development with internal validation)",
    ),
    (
        5,
        "Methods",
        "Data sources, study design and the dates of data collection",
        "Training data (source; dates where the data has them)",
    ),
    (6, "Methods", "Participants: setting, eligibility criteria, treatments received", None),
    (
        7,
        "Methods",
        "Data preparation: pre-processing and quality checks, consistent across groups",
        "Training data (rows skipped by reason); Training details",
    ),
    (8, "Methods", "Outcome: definition, how and when it was assessed, blinding", None),
    (9, "Methods", "Predictors: definition, how and when measured, blinding", None),
    (
        10,
        "Methods",
        "Sample size and how it was arrived at",
        "Training data (split sizes); Evaluation (test size, confidence intervals)",
    ),
    (11, "Methods", "Missing data and how it was handled", "Training data (rows skipped, by reason)"),
    (
        12,
        "Methods",
        "Analysis: model type, building, tuning, internal validation, calibration",
        "Model details; Training details; Evaluation; Calibration",
    ),
    (13, "Methods", "Class imbalance: methods used and their rationale", None),
    (14, "Methods", "Fairness: how it was assessed across groups, and why those groups", "Subgroup performance"),
    (15, "Methods", "Model output: what it returns and any decision threshold", None),
    (
        16,
        "Methods",
        "Differences between development and evaluation data (setting, eligibility, outcome, predictors)",
        "Training data (splits from the same source: internal validation); other settings: " + DEPLOYER.lower(),
    ),
    (17, "Methods", "Ethics approval and consent", None),
    (
        18,
        "Open science",
        "Funding, conflicts of interest, protocol, registration, data and code availability",
        "Code: hf-medai (open source), How to use and Training details; funding, conflicts, protocol, registration and "
        "data access: " + DEVELOPER.lower(),
    ),
    (19, "Open science", "Patient and public involvement", None),
    (20, "Results", "Participants: flow, characteristics, outcome events per split", "Training data (split table)"),
    (
        21,
        "Results",
        "Model development: participants and events in each analysis",
        "Training data; Evaluation (test size)",
    ),
    (
        22,
        "Results",
        "Model specification: enough detail to use or reproduce the model",
        "Model details; How to use; Training details (the weights are in this repository)",
    ),
    (
        23,
        "Results",
        "Performance with confidence intervals, including calibration and subgroups",
        "Evaluation; Calibration; Subgroup performance (95% bootstrap intervals)",
    ),
    (24, "Results", "Model updating and its performance", "Not updated: a single training run"),
    (
        25,
        "Discussion",
        "Interpretation of the results, fairness included",
        "Evaluation; Subgroup performance; Bias, risks and limitations",
    ),
    (
        26,
        "Discussion",
        "Limitations: non-representative data, sample size, overfitting, missing data",
        "Bias, risks and limitations",
    ),
    (
        27,
        "Discussion",
        "Usability in the intended setting: users, workflow, what is needed to deploy",
        "Intended use; Out-of-scope use; Safety and regulatory notes; workflow and local validation: "
        + DEPLOYER.lower(),
    ),
]
DEVELOPER_ITEMS = {17, 18, 19}  # facts about the study, known to whoever ran it, not to the training code


def tripod_rows(kind, m: dict | None = None) -> list[tuple[int, str, str, str]]:
    """(number, part, title, where reported) for a card of `kind` (an `hf_medai.kinds.Kind`, whose `tripod` cells
    replace the generic ones; anything else gets the generic cells): always 27 rows."""
    m = m or {}
    cells: Mapping[int, str] = getattr(kind, "tripod", None) or {}
    rows = []
    for number, part, title, generic in ITEMS:
        text = cells.get(number) or generic
        if number == 14 and not m.get("subgroups") and number not in cells:
            text = "Not assessed: the data had no subgroup columns. " + DEPLOYER + " on local data"
        if number == 23 and m.get("n_bootstrap") == 0 and number not in cells:
            text = "Evaluation; Calibration; Subgroup performance (no confidence intervals: the run set n_bootstrap=0)"
        if not text:
            text = DEVELOPER if number in DEVELOPER_ITEMS else DEPLOYER
        rows.append((number, part, title, text))
    return rows
