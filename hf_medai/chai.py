"""The CHAI Applied Model Card (Coalition for Health AI, schema v0.2) of a run folder: `model_card.chai.xml`.

Written by `hf_medai.cards.write_card` next to README.md, from the same facts: the sections of the rendered Hub
card (intended use, out-of-scope use, limitations, training data, how to use) and metrics.json. Each key
metric is a `MetricResult` whose `ValueJson` is a JSON object: {"metric", "value", "ci_low", "ci_high", ...},
with `value` exactly metrics.json's number, so a health system can file the card and check it against the run.
What a training run cannot know (developer contact, funding, stakeholders, clinical setting) is written as
"To be supplied by ...": never left out, never invented. The tests validate it against the schema
(a copy, with its licence notice, in tests/data/chai-applied-model-card-v0.2.xsd).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from hf_medai.kinds import Kind, kind_of
from hf_medai.reporting_text import DEPLOYER

NS = "https://mc.chai.org/v0.2/schema.xsd"
FILENAME = "model_card.chai.xml"
DEVELOPER = "To be supplied by the developer (not known to the training run)"


def _clean(value):
    """JSON-safe: NaN and infinities become null (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _dumps(obj) -> str:
    return json.dumps(_clean(obj), sort_keys=False, allow_nan=False)


def _section(sections: dict[str, str], *starts: str, default: str = "") -> str:
    for start in starts:
        for title, body in sections.items():
            if title.startswith(start) and body:
                return body
    return default


def _metric_results(m: dict, keys) -> list[tuple[str, dict]]:
    rows = []
    for key, label in keys:
        if key not in m or isinstance(m[key], (dict, list)):
            continue
        value = {"metric": key, "value": m[key]}
        for suffix in ("ci_low", "ci_high"):
            if f"{key}_{suffix}" in m:
                value[suffix] = m[f"{key}_{suffix}"]
        if "ci_low" in value:
            value["ci_level"] = m.get("ci_level", 0.95)
        if m.get("n") is not None:
            value["n"] = m["n"]
        rows.append((label, value))
    return rows


def _text(parent: ET.Element, tag: str, text) -> ET.Element:
    el = ET.SubElement(parent, f"{{{NS}}}{tag}")
    el.text = str(text) if text not in (None, "") else DEPLOYER
    return el


def _key_metric(parent, tag, goal, results, interpretation, test_type, data, validation):
    km = ET.SubElement(parent, f"{{{NS}}}{tag}")
    _text(km, "MetricGoal", goal)
    res = ET.SubElement(km, f"{{{NS}}}Results")
    if not results:
        results = [
            ("not measured", {"metric": None, "value": None, "reason": "no metric of this kind for this model"})
        ]
    for label, value in results:
        r = ET.SubElement(res, f"{{{NS}}}MetricResult")
        _text(r, "Label", label)
        _text(r, "ValueJson", _dumps(value))
    for tag2, text in (
        ("Interpretation", interpretation),
        ("TestType", test_type),
        ("TestingDataDescription", data),
        ("ValidationProcessAndJustification", validation),
    ):
        _text(km, tag2, text)


def build_chai_card(
    run_dir: str | Path, run: tuple[dict, dict], body: str, sections: dict[str, str], versions: dict[str, str]
) -> ET.ElementTree:
    """The CHAI Applied Model Card of a run folder, from the facts the Hub card was written from.

    `run`: the run's (metrics, config); `body`: the Hub card's markdown without its YAML header; `sections`: its
    lower-cased heading -> text; `versions`: the library versions named in the Hub card. `cards.write_card` passes
    the ones it has just used. What the card says about the kind of model comes from `hf_medai.kinds`.
    """
    from hf_medai import __version__

    run_dir = Path(run_dir)
    m, config = run
    kind = kind_of(m)
    task = m.get("task", kind.task)
    facts = kind.chai
    name = Path(config.get("output_dir") or run_dir).name
    synthetic = bool(m.get("synthetic_data"))
    dataset = m.get("dataset_label") or m.get("dataset") or "?"
    summary = next(
        (
            p.strip()
            for p in re.split(r"\n\s*\n", body)
            if p.strip() and not p.lstrip().startswith(("#", ">", "{", "|", "!", "-"))
        ),
        "",
    )
    model_config = {}
    for cfg in ("config.json", "adapter_config.json", "model_index.json"):
        if (run_dir / cfg).is_file():
            model_config = json.loads((run_dir / cfg).read_text())
            break
    architecture = (
        (model_config.get("architectures") or [None])[0]
        or model_config.get("_class_name")
        or model_config.get("peft_type")
        or "?"
    )
    hub_org = (config.get("hub_model_id") or "").split("/")[0] if "/" in (config.get("hub_model_id") or "") else ""
    root = ET.Element(f"{{{NS}}}AppliedModelCard")

    basic = ET.SubElement(root, f"{{{NS}}}BasicInfo")
    title = re.search(r"^# (.+)$", body, re.MULTILINE)  # the Hub card's title, written from the run's facts
    _text(basic, "ModelName", title.group(1).strip() if title else f"{m.get('recipe', 'model')}: {name}")
    _text(basic, "ModelDeveloper", hub_org or DEVELOPER)
    _text(basic, "DeveloperContact", DEVELOPER)

    release = ET.SubElement(root, f"{{{NS}}}ReleaseInfo")
    _text(release, "ReleaseStage", "Research prototype; not released for clinical use")
    _text(release, "ReleaseDate", _dt.date.today().isoformat())
    _text(
        release,
        "ReleaseVersion",
        f"{name} (hf-medai {__version__}, global step {(m.get('training') or {}).get('global_step', '?')})",
    )
    _text(
        release,
        "GlobalAvailability",
        "Not available for clinical use anywhere. Weights may be shared on the "
        "Hugging Face Hub, in a private repository unless the developer chose public.",
    )
    _text(release, "RegulatoryApproval", "None: not cleared or approved by any regulator; not a medical device.")

    summary_el = ET.SubElement(root, f"{{{NS}}}ModelSummary")
    _text(
        summary_el,
        "Summary",
        summary
        + (
            " Trained and tested on synthetic data: its numbers show that the "
            "pipeline works, not how it would perform on patients."
            if synthetic
            else ""
        ),
    )
    keywords = ET.SubElement(summary_el, f"{{{NS}}}Keywords")
    for word in ["medical", "hf-medai", task, m.get("recipe")] + (["synthetic-data"] if synthetic else []):
        if word:
            _text(keywords, "Keyword", word)

    uses = ET.SubElement(root, f"{{{NS}}}UsesAndDirections")
    intended = _section(sections, "intended use")
    users = re.search(r"\*\*Intended users:\*\*\s*(.+?)(?=\n- \*\*|\Z)", intended, re.S)
    _text(uses, "IntendedUseAndWorkflow", intended + "\n\nClinical workflow and setting: " + DEPLOYER + ".")
    _text(uses, "PrimaryIntendedUsers", " ".join(users.group(1).split()) if users else intended)
    _text(uses, "HowToUse", _section(sections, "how to use"))
    _text(uses, "TargetedPatientPopulation", facts.population)
    _text(uses, "CautionedOutOfScopeSettings", _section(sections, "out-of-scope"))

    warnings = ET.SubElement(root, f"{{{NS}}}Warnings")
    limits = _section(sections, "bias, risks and limitations", "limitations")
    safety_text = _section(sections, "safety and regulatory", "privacy and safety", "dual use", "safety probes")
    _text(warnings, "KnownRisksAndLimitations", "\n\n".join(t for t in (limits, safety_text) if t))
    subgroup_text = _section(sections, "subgroup performance", default="")
    _text(
        warnings,
        "KnownBiasesOrEthicalConsiderations",
        "\n\n".join(t for t in (limits, subgroup_text) if t) or "No subgroup analysis applies to this model.",
    )
    _text(warnings, "ClinicalRiskLevel", facts.risk)

    trust = ET.SubElement(root, f"{{{NS}}}TrustIngredients")
    ai = ET.SubElement(trust, f"{{{NS}}}AISystemFacts")
    _text(ai, "OutcomesAndOutputs", facts.outputs)
    _text(ai, "ModelType", f"{architecture} ({task}; library {m.get('library_name', 'transformers')})")
    _text(ai, "FoundationModels", m.get("hub_base_model") or m.get("base_model") or "None (trained from scratch)")
    _text(
        ai, "InputDataSource", f"{dataset}" + (" (synthetic, generated in the real file format)" if synthetic else "")
    )
    _text(ai, "OutputAndInputDataTypes", facts.io)
    _text(ai, "DevelopmentDataCharacterization", _section(sections, "training data"))
    _text(ai, "BiasMitigationApproaches", _bias_mitigation(m, config, kind))
    _text(
        ai,
        "OngoingMaintenance",
        "None by the training run. The deployer must validate on local data before use "
        "(`hf-medai evaluate RUN --data LOCAL`), monitor performance and calibration for "
        "drift, and retrain or withdraw the model when they degrade.",
    )
    _text(
        ai,
        "Security",
        "Weights in safetensors only (no pickles). `hf-medai push` uploads to a private repository "
        "by default, refuses data files and text that trips the PHI scanner, and never uploads "
        "checkpoints or training images.",
    )
    _text(
        ai,
        "Transparency",
        "Hub card (README.md) with the full evaluation, subgroup tables and training settings; "
        "metrics.json and run_config.yaml hold every number and setting of the run.",
    )
    transparency = ET.SubElement(trust, f"{{{NS}}}TransparencyInformation")
    _text(transparency, "FundingSource", DEVELOPER)
    _text(
        transparency,
        "ThirdPartyInformation",
        "Built with open-source software: hf-medai "
        + __version__
        + ", "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if v != "n/a"),
    )
    _text(transparency, "StakeholdersConsulted", DEVELOPER)

    metrics = ET.SubElement(root, f"{{{NS}}}KeyMetrics")
    n_text = f"{m['n']} test examples" if m.get("n") is not None else "see the Hub card's Evaluation section"
    test_data = (
        f"Held-out test split of {dataset} ({n_text}), never used for training, threshold or model "
        f"selection" + ("; synthetic data" if synthetic else "") + "."
    )
    validation = (
        f"Internal validation. 95% confidence intervals by {m.get('n_bootstrap', config.get('n_bootstrap', '?'))} "
        "bootstrap resamples where given. External validation on the deployer's population is required "
        "before any clinical use: " + DEPLOYER + "."
    )
    test_type = "Internal validation on a held-out split (retrospective)"
    if facts.generative:
        n_gen = (m.get("generation") or {}).get("images") or (m.get("generation") or {}).get("molecules") or "?"
        test_data = (
            f"{n_gen} samples generated after training (seeded), compared with the training data of {dataset} "
            "and, where available, held-out real data" + ("; synthetic data" if synthetic else "") + "."
        )
        test_type = "Evaluation of generated samples against training and held-out data"
    _key_metric(
        metrics,
        "UsefulnessUsabilityEfficacy",
        "Discrimination / task performance on held-out data",
        _metric_results(m, facts.usefulness),
        "Higher is better except for perplexity, FID, KID, MAE and RMSE. Compare with the baseline and "
        "chance rows of the Hub card.",
        test_type,
        test_data,
        validation,
    )
    _key_metric(
        metrics,
        "FairnessEquity",
        "Comparable performance across patient subgroups",
        (facts.fairness(m) if facts.fairness else [])
        or [("subgroup analysis", {"metric": "subgroup_analysis", "value": None, "reason": facts.no_fairness})],
        "Worst group and largest gap per subgroup column; groups under the minimum size are flagged as too "
        "uncertain to judge.",
        test_type,
        test_data,
        validation,
    )
    _key_metric(
        metrics,
        "SafetyReliability",
        "Calibrated, reliable outputs and no leakage of training data",
        _metric_results(m, facts.safety),
        "Lower is better for calibration error, Brier score, memorisation and structural alerts; higher for "
        "safety probe pass rates.",
        test_type,
        test_data,
        validation,
    )

    resources = ET.SubElement(root, f"{{{NS}}}Resources")
    _text(resources, "EvaluationReferences", "README.md (Hub card) and metrics.json in the run folder.")
    _text(resources, "ClinicalTrial", "None.")
    _text(resources, "PeerReviewedPublications", "None for this model.")
    _text(resources, "ReimbursementStatus", "None.")
    _text(
        resources,
        "PatientConsentOrDisclosure",
        "Not applicable: synthetic data, no patients."
        if synthetic
        else f"{DEPLOYER}: the consent and data use terms of {dataset}, and how patients are told that AI is used.",
    )
    _text(
        root,
        "Bibliography",
        "Coalition for Health AI, Applied Model Card schema v0.2 (2024). Collins GS et al., "
        "TRIPOD+AI statement, BMJ 2024;385:e078378. Mitchell M et al., Model Cards for Model "
        "Reporting, FAT* 2019.",
    )
    ET.indent(root)
    return ET.ElementTree(root)


def _bias_mitigation(m: dict, config: dict, kind: Kind) -> str:
    steps = []
    report = m.get("data_report") or {}
    if kind.chai.splits:
        steps.append(kind.chai.splits)
    if m.get("subgroups"):
        steps.append(
            f"Subgroup evaluation on the test split for: {', '.join(k for k in m['subgroups'] if k not in ('before', 'after'))}"
            f"; groups under {config.get('min_group_size', '?')} examples, or under "
            f"{config.get('min_group_class_count', '?')} of the cases a metric depends on, flagged and left "
            "out of the worst-group and gap comparisons; 95% bootstrap intervals per group and per gap."
        )
    if config.get("class_balance"):
        steps.append(f"Class imbalance handled with `{config['class_balance']}`.")
    if m.get("calibration") or m.get("training", {}).get("prior_correction"):
        steps.append("Probabilities recalibrated on validation (never on test).")
    if m.get("threshold_source"):
        steps.append(f"Decision threshold chosen {m['threshold_source']}.")
    if (report.get("phi") or {}).get("policy"):
        steps.append(f"Notes screened for identifiers (policy `{report['phi']['policy']}`).")
    steps.extend(kind.chai.bias_steps)
    return " ".join(steps) or "None beyond the evaluation reported in the Hub card."


def write_chai_card(
    run_dir: str | Path, run: tuple[dict, dict], body: str, sections: dict[str, str], versions: dict[str, str]
) -> Path:
    """Write `model_card.chai.xml` into the run folder (atomically) and return its path; arguments as
    `build_chai_card`'s."""
    from hf_medai.io import atomic_path

    tree = build_chai_card(run_dir, run=run, body=body, sections=sections, versions=versions)
    path = Path(run_dir) / FILENAME
    with atomic_path(path) as tmp:
        tree.write(tmp, encoding="utf-8", xml_declaration=True, default_namespace=NS)
    return path
