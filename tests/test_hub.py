"""`hf-medai push` and recipes' `--push_to_hub` against a loopback Hub stub: what arrives, privacy, and the gates
(each refusal sends nothing: no repo is created, no commit is made)."""

from __future__ import annotations

import base64
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import load_recipe
from hf_medai.hub import PushRefused, plan_push, push_run_folder

REPO = "hospital/lesion-vit"


class HubStub:
    """A few endpoints of the Hub API, enough for `HfApi.create_repo` and `create_commit` (regular uploads)."""

    def __init__(self):
        self.requests: list[tuple[str, str, bytes]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status: int, payload: dict):
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                stub.requests.append(("GET", self.path, b""))
                self._reply(404, {"error": "not in the stub"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub.requests.append(("POST", self.path, body))
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    req = json.loads(body)
                    name = f"{req.get('organization')}/{req['name']}" if req.get("organization") else req["name"]
                    return self._reply(200, {"url": f"{stub.url}/{name}", "name": name, "id": name})
                if path == "/api/validate-yaml":
                    return self._reply(200, {"errors": [], "warnings": []})
                if path.endswith("/preupload/main"):
                    files = json.loads(body)["files"]
                    return self._reply(
                        200,
                        {
                            "files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                            ]
                        },
                    )
                if path.endswith("/commit/main"):
                    repo = path[len("/api/models/") : -len("/commit/main")]
                    return self._reply(
                        200,
                        {"success": True, "commitOid": "a" * 40, "commitUrl": f"{stub.url}/{repo}/commit/{'a' * 40}"},
                    )
                self._reply(404, {"error": f"no route {path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    # What the client asked for.
    def created(self) -> list[dict]:
        return [json.loads(b) for m, p, b in self.requests if p.startswith("/api/repos/create")]

    def privacy(self) -> list[bool | None]:
        """Per create request: True/False when private/public was asked for explicitly (huggingface_hub 1.x sends
        `private`, 2.x `visibility`), None when left to the server's default (public for a user's repo)."""
        out = []
        for req in self.created():
            if "visibility" in req:
                out.append({"private": True, "public": False}.get(req["visibility"]))
            else:
                out.append(req.get("private"))
        return out

    def committed(self) -> dict[str, bytes]:
        """path_in_repo -> bytes of every file in every commit."""
        files = {}
        for _, path, body in self.requests:
            if path.split("?")[0].endswith("/commit/main"):
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        assert item["value"]["encoding"] == "base64"
                        files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
        return files

    def sent_anything(self) -> bool:
        return any(
            p.startswith("/api/repos/create") or "/commit/" in p or "/preupload/" in p for _, p, _ in self.requests
        )


@pytest.fixture(scope="module")
def hub():
    stub = HubStub()
    # conftest makes the Hub offline and huggingface_hub may already be imported: point it at the stub at runtime.
    import huggingface_hub.constants as constants

    mp = pytest.MonkeyPatch()
    mp.setattr(constants, "HF_HUB_OFFLINE", False)
    mp.setattr(constants, "ENDPOINT", stub.url)
    mp.setenv("HF_ENDPOINT", stub.url)
    mp.setenv("HF_TOKEN", "hf_stub_token")
    yield stub
    mp.undo()
    stub.close()


@pytest.fixture(scope="module")
def pushed_run(hub, tmp_path_factory):
    """A tiny lesion run whose recipe pushes itself (`--push_to_hub`): the recipes' path through the gates."""
    from hf_medai.data.synthetic.lesions import write_ham10000

    root = tmp_path_factory.mktemp("hub")
    ham = write_ham10000(root / "ham", n=120, seed=2)
    out = root / "run"
    load_recipe("lesion_classification").main(
        [
            "--data_dir",
            str(ham),
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            "--image_size",
            "32",
            "--from_scratch",
            "true",
            "--per_device_train_batch_size",
            "16",
            "--n_bootstrap",
            "10",
            "--save_strategy",
            "no",
            "--eval_strategy",
            "no",
            "--load_best_model_at_end",
            "false",
            "--push_to_hub",
            "--hub_model_id",
            "hospital/recipe-push",
        ]
    )
    return out, list(hub.requests)


@pytest.fixture
def run(pushed_run, hub, tmp_path):
    """A fresh copy of the run folder to spoil, and a stub with no requests yet."""
    copy = tmp_path / "run"
    shutil.copytree(pushed_run[0], copy)
    hub.requests.clear()
    return copy


EXPECTED = {
    "README.md",
    "model_card.chai.xml",
    "config.json",
    "preprocessor_config.json",
    "model.safetensors",
    "metrics.json",
    "run_config.yaml",
    "reliability_diagram.png",
    "roc_pr_curves.png",
}


def test_recipe_push_to_hub_goes_through_the_gates_and_is_private(pushed_run, hub):
    out, requests = pushed_run
    stub = HubStub.__new__(HubStub)
    stub.requests = requests
    assert stub.privacy() == [True]  # --hub_private_repo left unset: private
    files = stub.committed()
    assert set(files) == EXPECTED
    assert "predictions.csv" not in files and (out / "predictions.csv").is_file()
    for name in files:
        assert files[name] == (out / name).read_bytes(), name


def test_push_sends_exactly_the_model_files_and_card(run, hub):
    (run / "checkpoint-2").mkdir()
    (run / "checkpoint-2" / "model.safetensors").write_bytes(b"x")
    (run / "checkpoint-2" / "optimizer.pt").write_bytes(b"x")  # a pickle, but inside a checkpoint: never sent
    url = push_run_folder(run, REPO, endpoint=hub.url, token="hf_stub_token")
    assert url.startswith(hub.url) and "/commit/" in url
    assert hub.privacy() == [True]
    files = hub.committed()
    assert set(files) == EXPECTED
    for name, data in files.items():
        assert data == (run / name).read_bytes(), name
    plan = plan_push(run)
    assert {"predictions.csv", "robustness_artefacts.png", "checkpoint-2/"} <= set(
        plan.left_behind
    )  # test images stay


def test_public_only_when_asked_and_the_cli_path(run, hub, capsys):
    from hf_medai.cli import main as cli

    assert cli(["push", str(run), "--repo_id", "hospital/public-one", "--public"]) == 0
    assert hub.privacy() == [False]
    assert set(hub.committed()) == EXPECTED
    out = capsys.readouterr().out
    assert "public repo" in out and "left behind: predictions.csv" in out
    hub.requests.clear()
    assert cli(["push", str(run), "--repo_id", "hospital/private-one"]) == 0
    assert hub.privacy() == [True]


def test_included_data_is_sent_when_asked(run, hub):
    (run / "extra_notes.txt").write_text("Sample sizes per site were small.\n")
    with pytest.raises(PushRefused, match="extra_notes.txt"):
        push_run_folder(run, REPO, endpoint=hub.url)
    assert not hub.sent_anything()
    push_run_folder(run, REPO, endpoint=hub.url, include=["extra_notes.txt"])
    assert hub.committed()["extra_notes.txt"] == (run / "extra_notes.txt").read_bytes()


def _drop_section(run: Path, heading: str):
    card = (run / "README.md").read_text()
    start = card.index(heading)
    end = card.index("\n## ", start + 1)
    (run / "README.md").write_text(card[:start] + card[end + 1 :])


SPOIL = {
    "no card": (lambda r: (r / "README.md").unlink(), "README.md", "no model card"),
    "no intended use": (lambda r: _drop_section(r, "## Intended use"), "README.md", "intended-use"),
    "no limitations": (lambda r: _drop_section(r, "## Bias, risks and limitations"), "README.md", "bias/limitations"),
    "data table": (lambda r: (r / "train.csv").write_text("id,label\n1,melanoma\n"), "train.csv", "data"),
    "parquet": (lambda r: (r / "cohort.parquet").write_bytes(b"PAR1"), "cohort.parquet", "data"),
    "arrow": (lambda r: (r / "data-00000-of-00001.arrow").write_bytes(b"x"), "data-00000-of-00001.arrow", "data"),
    "jsonl": (lambda r: (r / "questions.jsonl").write_text('{"q": 1}\n'), "questions.jsonl", "data"),
    "notes": (
        lambda r: ((r / "notes").mkdir(), (r / "notes" / "note_001.txt").write_text("Chest pain.")),
        "notes/note_001.txt",
        "data",
    ),
    "training images": (
        lambda r: ((r / "images").mkdir(), (r / "images" / "ISIC_0000001.jpg").write_bytes(b"\xff\xd8")),
        "images/ISIC_0000001.jpg",
        "data",
    ),
    "phi in card": (
        lambda r: (r / "README.md").write_text(
            (r / "README.md").read_text() + "\nQuestions to Dr. Smith at 617-555-0134.\n"
        ),
        "README.md",
        "PHI scanner",
    ),
    "phi in json": (
        lambda r: (r / "config.json").write_text(
            json.dumps({**json.loads((r / "config.json").read_text()), "contact": "jane.doe@hospital.org"})
        ),
        "config.json",
        "email",
    ),
    "phi in yaml": (
        lambda r: (r / "run_config.yaml").write_text(
            (r / "run_config.yaml").read_text() + "note: seen on 03/14/2021\n"
        ),
        "run_config.yaml",
        "date",
    ),
    "pytorch bin": (lambda r: (r / "pytorch_model.bin").write_bytes(b"x"), "pytorch_model.bin", "not safetensors"),
    "pt": (lambda r: (r / "model.pt").write_bytes(b"x"), "model.pt", "not safetensors"),
    "pickle": (lambda r: (r / "scaler.pkl").write_bytes(b"x"), "scaler.pkl", "not safetensors"),
}


@pytest.mark.parametrize("case", list(SPOIL))
def test_each_gate_refuses_and_sends_nothing(run, hub, case):
    spoil, path, reason = SPOIL[case]
    spoil(run)
    with pytest.raises(PushRefused, match=reason) as refused:
        push_run_folder(run, REPO, endpoint=hub.url, token="hf_stub_token")
    assert refused.value.path == path and "nothing was sent" in str(refused.value)
    assert not hub.sent_anything() and not hub.requests


def test_included_predictions_still_pass_the_phi_scanner(run, hub):
    # Lesion ids (ISIC_0024306) are public dataset ids, not PHI: an included predictions.csv holding only them leaves.
    assert "ISIC_" in (run / "predictions.csv").read_text()
    assert "predictions.csv" in plan_push(run, include=["predictions.csv"]).upload
    # An identifier in it is still refused, naming what the scanner can and cannot see, and nothing is sent.
    with (run / "predictions.csv").open("a") as f:
        f.write("ISIC_9999999,melanoma,0.9,seen 03/14/2021\n")
    with pytest.raises(PushRefused, match="PHI scanner") as refused:
        push_run_folder(run, REPO, endpoint=hub.url, include=["predictions.csv"])
    assert refused.value.path == "predictions.csv" and "date=1" in str(refused.value)
    with pytest.raises(PushRefused, match="never leaves"):
        push_run_folder(run, REPO, endpoint=hub.url, include=["memorisation/*"])
    assert not hub.requests


def test_skipped_rows_of_real_datasets_do_not_stop_a_push(run, hub):
    # A --skip_bad_rows run on ISIC/HAM10000 or MIMIC writes dataset ids into metrics.json's data_report (issue 13.11).
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["data_report"] = {
        **metrics.get("data_report", {}),
        "skipped_examples": [
            "[duplicate_image_id] HAM10000_metadata.csv, row 5 (id ISIC_0024306): duplicate image id 'ISIC_0024306', "
            "first at row 3",
            "[missing_image] HAM10000_metadata.csv, row 7 (id ISIC_0027419): lesion HAM_0000118 has no image file",
            "[no_label] NOTEEVENTS.csv, row 1234567: admission 20001234: no discharge summary",
            "[note_too_long] discharge.csv, row 12 (hadm_id 20001234, note_id 10000032-DS-21): text has 250,000 characters",
        ],
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    push_run_folder(run, REPO, endpoint=hub.url, token="hf_stub_token")
    assert "metrics.json" in hub.committed()


def test_the_gate_says_what_the_phi_scanner_can_and_cannot_see(run, hub):
    (run / "README.md").write_text((run / "README.md").read_text() + "\nContact: Keisha Donnelly, RN.\n")
    with pytest.raises(PushRefused) as refused:
        push_run_folder(run, REPO, endpoint=hub.url, token="hf_stub_token")
    message = str(refused.value)
    assert "name=1" in message and "Keisha" not in message
    for said in ("Safe Harbor", "cannot see", "biometric", "full-face photographs", "images", "not de-identification"):
        assert said in message, said
    assert not hub.requests
    (run / "README.md").write_text((run / "README.md").read_text().replace("Contact: Keisha Donnelly, RN.", ""))
    push_run_folder(run, REPO, endpoint=hub.url, token="hf_stub_token")
    description = [
        json.loads(line)
        for _, path, body in hub.requests
        if path.split("?")[0].endswith("/commit/main")
        for line in body.decode().splitlines()
    ][0]["value"]["description"]
    assert "cannot see" in description and "biometric" in description


def test_cli_refusal_exits_2_and_sends_nothing(run, hub, capsys):
    from hf_medai.cli import main as cli

    (run / "model.ckpt").write_bytes(b"x")
    assert cli(["push", str(run), "--repo_id", REPO]) == 2
    err = capsys.readouterr().err
    assert "model.ckpt" in err and "not safetensors" in err
    assert not hub.requests


def test_memorisation_pairs_and_checkpoints_never_leave(tmp_path):
    run = tmp_path / "diffusion"
    (run / "memorisation").mkdir(parents=True)
    (run / "memorisation" / "pair_00_generated1_training7.png").write_bytes(b"png")
    (run / "samples").mkdir()
    (run / "samples" / "grid.png").write_bytes(b"png")
    (run / "checkpoint-6").mkdir()
    (run / "checkpoint-6" / "model.safetensors").write_bytes(b"x")
    (run / "model_index.json").write_text("{}")
    (run / "README.md").write_text("# m\n\n## Intended use\nResearch.\n\n## Limitations\nMany.\n")
    plan = plan_push(run, include=["*"])
    assert plan.upload == ["README.md", "model_index.json", "samples/grid.png"]
    assert set(plan.left_behind) == {"memorisation/", "checkpoint-6/"}


def test_a_fusion_run_pushes_its_stage_model_but_not_its_checkpoints_or_scores(tmp_path):
    run = tmp_path / "fusion"
    stage = run / "ablation" / "image_only"
    (stage / "checkpoint-3").mkdir(parents=True)
    (stage / "checkpoint-3" / "model.safetensors").write_bytes(b"x")
    (stage / "checkpoint-3" / "trainer_state.json").write_text("{}")
    (stage / "model.safetensors").write_bytes(b"x")
    (stage / "config.json").write_text("{}")
    (stage / "scores.npz").write_bytes(b"npz")
    (run / "model.safetensors").write_bytes(b"x")
    (run / "fusion_processor.json").write_text("{}")
    (run / "README.md").write_text("# m\n\n## Intended use\nResearch.\n\n## Limitations\nMany.\n")
    plan = plan_push(run)
    assert plan.upload == [
        "README.md",
        "ablation/image_only/config.json",
        "ablation/image_only/model.safetensors",
        "fusion_processor.json",
        "model.safetensors",
    ]
    assert set(plan.left_behind) == {"ablation/image_only/checkpoint-3/", "ablation/image_only/scores.npz"}
    assert "ablation/image_only/checkpoint-3/" in plan_push(run, include=["*"]).left_behind  # never, even if asked
