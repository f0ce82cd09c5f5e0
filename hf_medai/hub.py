"""Publishing a run folder: private by default, model files and card only, never data."""

from __future__ import annotations

from pathlib import Path

# What may leave with a push; everything else in the folder (predictions.csv, checkpoints, data) stays.
PUSHED = ["*.safetensors", "*.json", "README.md", "*.png", "*.txt", "*.model", "run_config.yaml"]
# memorisation/ holds training images next to their nearest generated ones: patient data.
NEVER = ["predictions.csv", "checkpoint-*/**", "memorisation/**", "*.bin", "*.pt", "*.pth", "*.pkl", "*.csv", "*.parquet", "*.arrow"]


class PushRefused(RuntimeError):
    pass


def push_run_folder(run_dir: str | Path, repo_id: str | None, private: bool = True, token: str | None = None,
                    endpoint: str | None = None) -> str:
    """Create the repo (private unless told otherwise) and upload the model files and card."""
    from huggingface_hub import HfApi

    run_dir = Path(run_dir)
    if not repo_id:
        raise PushRefused("pushing needs a repo id (--hub_model_id or --repo_id ORG/NAME)")
    if not (run_dir / "README.md").is_file():
        raise PushRefused(f"{run_dir} has no model card (README.md); run `hf-medai card {run_dir}` first")
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    commit = api.upload_folder(folder_path=str(run_dir), repo_id=repo_id, allow_patterns=PUSHED,
                               ignore_patterns=NEVER, commit_message="Upload model and card with hf-medai")
    return str(commit)
