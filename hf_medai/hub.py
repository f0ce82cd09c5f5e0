"""Publishing a run folder: private by default, model files and card only, never data.

`push_run_folder` is what `hf-medai push` and every recipe's `--push_to_hub` call. It first decides, file by
file, what would leave (`plan_push`), and refuses the whole push, before any request is made, when:
- the card (README.md) is missing, or lacks an intended-use or a bias/limitations section;
- the folder holds data (data tables, notes, images that are not plots or generated samples, unknown files)
  that was not explicitly included (`include=[PATTERN]`, `--include PATTERN`);
- a text file that would leave trips the PHI scanner (`hf_medai.data.phi.scan_phi`). It reads text only, for the 16
  HIPAA Safe Harbor classes that text can hold; it cannot see biometric identifiers or full-face photographs, nor
  anything in images (plots and generated samples are pushed unscanned), and it misses a name with no title,
  credential or label that is not in its census name lists: a screen, not de-identification (`phi.SCOPE`, said in
  every refusal and in the commit description). Public dataset ids (`ISIC_0024306`, `hadm_id 20001234`) are not PHI;
- a weight file is not safetensors (pickles run code when loaded, and hide what they hold).
Never pushed, whatever is included: `checkpoint-*/` at any depth (optimizer state, half-trained weights) and
`memorisation/` (training images next to their nearest generated ones: patient data). Left behind unless included:
`predictions.csv` (one row per test patient, with ids) and a fusion run's `ablation/*/scores.npz` (per-example
scores), which then still have to pass the gates.
What leaves is exactly the planned list, sent as one commit: no second walk of the folder.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

from hf_medai.errors import HfMedaiError
from hf_medai.run_folder import card_sections

# Never leave, even when a pattern includes them (top-level folders).
NEVER_DIRS = {
    "checkpoint-*": "a training checkpoint (optimizer state, intermediate weights)",
    "memorisation": "training images next to their nearest generated ones (patient data)",
}
# Written by the recipes, stay behind unless included (then they pass the PHI scanner like any text).
LEFT_BEHIND = {
    "predictions.csv": "per-example test predictions with ids and subgroup columns",
    "ablation/*/scores.npz": "a single-modality model's per-example validation and test scores (fusion ablation)",
    "reconstructions.png": "held-out images (a patient's, with real data) beside an MAE's reconstructions of them",
    "robustness_artefacts.png": "test images (a patient's, with real data) before and after the audit's artefacts",
}
# Weight formats that are not safetensors: refused outright.
UNSAFE_WEIGHTS = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".h5", ".msgpack", ".onnx_data")
# Model files, by exact name (any folder) or suffix.
MODEL_FILE_NAMES = {
    "README.md",
    "run_config.yaml",
    "vocab.txt",
    "merges.txt",
    "spiece.model",
    "tokenizer.model",
    "sentencepiece.bpe.model",
    "chat_template.jinja",
    "model_card.chai.xml",
    "vocab.json",
}
MODEL_SUFFIXES = (".safetensors", ".json")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
# Generated outputs the card shows (samples/grid.png, samples/generated.sdf): pushed with the model.
SAMPLES_DIR = "samples"
# Files read as text by the PHI gate.
TEXT_SUFFIXES = (
    ".md",
    ".txt",
    ".json",
    ".yaml",
    ".yml",
    ".jinja",
    ".xml",
    ".csv",
    ".tsv",
    ".jsonl",
    ".ndjson",
    ".sdf",
)
# The card's own date line is not PHI; every other date in a card is checked like any note.
_CARD_DATE = re.compile(r"^- \*\*Date:\*\* \d{4}-\d{2}-\d{2}[ \t]*$", re.MULTILINE)


class PushRefused(HfMedaiError, RuntimeError):
    """A push stopped before any request: `path` (relative to the run folder, or None) and `reason`."""

    def __init__(self, reason: str, path: str | None = None, fix: str = ""):
        self.path, self.reason = path, reason
        where = f"{path}: " if path else ""
        super().__init__(f"push refused, nothing was sent. {where}{reason}{'. ' + fix if fix else ''}")


@dataclass
class PushPlan:
    upload: list[str] = field(default_factory=list)  # relative posix paths, sorted
    left_behind: dict[str, str] = field(default_factory=dict)  # path or folder -> why it stays


def _matches(rel: str, patterns) -> bool:
    return any(
        fnmatch(rel, p) or fnmatch(PurePosixPath(rel).name, p) or rel.startswith(p.rstrip("/*") + "/")
        for p in patterns
    )


def _card_sections(text: str) -> tuple[bool, bool]:
    """(has an intended-use section with text, has a bias/limitations section with text)."""
    titles = [title for title, body in card_sections(text).items() if body]
    return (any("intended use" in t for t in titles), any("limitation" in t or "bias" in t for t in titles))


def _strings(obj) -> list[str]:
    """Every string (keys included) in parsed JSON/YAML: numbers such as parameter counts are not identifiers."""
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in _strings(v)]
    return [obj] if isinstance(obj, str) else []


def phi_scope() -> str:
    """What the PHI scanner can and cannot see (said with every refusal and in every push's commit description)."""
    from hf_medai.data.phi import SCOPE

    return SCOPE


def phi_findings(path: Path) -> dict[str, int]:
    """PHI scanner counts for one text file; structured files are scanned value by value."""
    from hf_medai.data.phi import scan_phi

    text = path.read_text(encoding="utf-8", errors="replace")
    name = path.name.lower()
    if name.endswith(".json"):
        try:
            pieces = _strings(json.loads(text))
        except ValueError:
            pieces = [text]
    elif name.endswith((".yaml", ".yml")):
        import yaml

        try:
            pieces = _strings(yaml.safe_load(text))
        except yaml.YAMLError:
            pieces = [text]
    elif name.endswith(".xml"):  # element text only: the namespace URL and the CHAI card's ReleaseDate are not PHI
        import xml.etree.ElementTree as ET

        try:
            pieces = [
                el.text
                for el in ET.fromstring(text).iter()
                if el.text and not (el.tag.endswith("ReleaseDate") and re.fullmatch(r"\d{4}-\d{2}-\d{2}", el.text))
            ]
        except ET.ParseError:
            pieces = [text]
    else:
        pieces = [_CARD_DATE.sub("", text) if name == "readme.md" else text]
    counts: dict[str, int] = {}
    for piece in pieces:
        for k, v in scan_phi(piece).items():
            counts[k] = counts.get(k, 0) + v
    return counts


def _classify(rel: str) -> str:
    """'model' (pushed), 'data' (refused unless included) or 'weights' (refused)."""
    name, low = PurePosixPath(rel).name, rel.lower()
    top = PurePosixPath(rel).parts[0]
    if low.endswith(UNSAFE_WEIGHTS):
        return "weights"
    if name in MODEL_FILE_NAMES or low.endswith(MODEL_SUFFIXES):
        return "model"
    if top == SAMPLES_DIR and (low.endswith(IMAGE_SUFFIXES) or name in ("README.txt", "generated.sdf")):
        return "model"  # generated samples, shown by the card
    if low.endswith(IMAGE_SUFFIXES) and "/" not in rel:
        return "model"  # plots written by the recipe (reliability diagram, ROC curves)
    return "data"  # tables, notes, arrays, volumes, images in folders, and anything unrecognised


def plan_push(run_dir: str | Path, include: list[str] | tuple[str, ...] = ()) -> PushPlan:
    """What a push of `run_dir` would send, or PushRefused naming the first file that stops it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PushRefused(f"{run_dir} is not a folder")
    for pattern in include:  # a broad pattern ('*') never reaches these; naming them is refused, not ignored
        for never, why in NEVER_DIRS.items():
            if fnmatch(pattern.split("/")[0], never):
                raise PushRefused(f"--include {pattern!r} asks to publish {why}, which never leaves", pattern)
    card = run_dir / "README.md"
    if not card.is_file():
        raise PushRefused("the folder has no model card", "README.md", f"run `hf-medai card {run_dir}` first")
    intended, limits = _card_sections(card.read_text(encoding="utf-8", errors="replace"))
    if not intended:
        raise PushRefused(
            "the card has no intended-use section (a heading with 'Intended use' and text under it)",
            "README.md",
            "say who may use the model, for what",
        )
    if not limits:
        raise PushRefused(
            "the card has no bias/limitations section (a heading with 'Bias' or 'Limitations' and text under it)",
            "README.md",
            "say where the model fails and whom it may treat unfairly",
        )
    plan = PushPlan()
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(run_dir).as_posix()
        parts = rel.split("/")
        top = parts[0]
        never = next(
            (why for pat, why in NEVER_DIRS.items() if fnmatch(top, pat) and (top != rel or pat == top)), None
        )
        if never:
            plan.left_behind[top + ("/" if top != rel else "")] = never
            continue
        nested = next((i for i, part in enumerate(parts[1:-1], 1) if fnmatch(part, "checkpoint-*")), None)
        if nested is not None:  # a stage's checkpoints (ablation/image_only/checkpoint-3/)
            plan.left_behind["/".join(parts[: nested + 1]) + "/"] = NEVER_DIRS["checkpoint-*"]
            continue
        if any(part.startswith(".") for part in PurePosixPath(rel).parts):
            plan.left_behind[rel] = "hidden file"
            continue
        if path.is_symlink():
            raise PushRefused("a symbolic link; copy the file it points to into the folder", rel)
        kind = _classify(rel)
        if kind == "weights":
            raise PushRefused(
                "a weight file that is not safetensors (pickle-based formats run code when loaded)",
                rel,
                "save with safetensors (`save_pretrained(..., safe_serialization=True)`) or delete it",
            )
        included = _matches(rel, include)
        behind = next((why for pat, why in LEFT_BEHIND.items() if fnmatch(rel, pat)), None)
        if behind and not included:
            plan.left_behind[rel] = behind
            continue
        if kind == "data" and not included:
            raise PushRefused(
                "data, not a model file (tables, notes, images of patients and unrecognised files stay private)",
                rel,
                f"move it out of the folder, or publish it knowingly with --include {rel}",
            )
        if rel.lower().endswith(TEXT_SUFFIXES):
            found = phi_findings(path)
            if found:
                counts = ", ".join(f"{k}={v}" for k, v in sorted(found.items()))
                raise PushRefused(
                    f"likely identifiers found by the PHI scanner ({counts})",
                    rel,
                    f"remove or de-identify them (hf_medai.data.phi.redact_phi), then push again. {phi_scope()}",
                )
        plan.upload.append(rel)
    return plan


def push_run_folder(
    run_dir: str | Path,
    repo_id: str | None,
    private: bool = True,
    token: str | None = None,
    endpoint: str | None = None,
    include: list[str] | tuple[str, ...] = (),
    plan: PushPlan | None = None,
) -> str:
    """Check the folder (`plan_push`), then create the repo (private unless told otherwise) and upload the plan.

    `plan`, when given, is the `plan_push(run_dir, include)` the caller already made; it is not recomputed.
    Returns the commit URL. Raises PushRefused, having sent nothing, when a gate fails.
    """
    run_dir = Path(run_dir)
    if not repo_id:
        raise PushRefused("pushing needs a repo id (--hub_model_id or --repo_id ORG/NAME)")
    if plan is None:
        plan = plan_push(run_dir, include)

    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(run_dir / rel)) for rel in plan.upload]
    stayed = "; ".join(f"{k} ({v})" for k, v in plan.left_behind.items())
    description = f"Text files passed the PHI scanner. {phi_scope()}." + (
        f"\n\nLeft behind: {stayed}" if stayed else ""
    )
    commit = api.create_commit(
        repo_id,
        operations=operations,
        commit_message="Upload model and card with hf-medai",
        commit_description=description,
    )
    return str(getattr(commit, "commit_url", commit))


def pusher(repo_id: str | None, private: bool = True):
    """A step for `run_folder.finish_run`: push the finished folder to `repo_id` and say where it went."""

    def push_folder(folder: Path) -> None:
        print(f"hf-medai: pushed to {push_run_folder(folder, repo_id, private=private)}")

    return push_folder


def finish_run(output_dir: str | Path, config: dict, training_args, push: bool) -> None:
    """The last step of every recipe: run_config.yaml (run_folder.finish_run), the cards (Hub + CHAI), then the push
    if one was asked for, then the run's summary."""
    from hf_medai import run_folder
    from hf_medai.cards import write_card
    from hf_medai.run_summary import print_run_summary

    steps = [write_card]
    if push:
        steps.append(pusher(training_args.hub_model_id, private=training_args.hub_private_repo is not False))
    run_folder.finish_run(output_dir, config, [*steps, print_run_summary])
