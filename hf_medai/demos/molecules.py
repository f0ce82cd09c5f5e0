"""Molecule diffusion demo: number, atom count, property target or formula -> 2D depictions, SMILES and an SDF.

The SDF is written to a fresh folder inside Gradio's own cache (never a path the user chooses).
"""

from __future__ import annotations

from pathlib import Path

from hf_medai.demos.common import MAX_ATOMS, MAX_MOLECULES, MAX_STEPS, check_range, header, output_folder


class MoleculeDemo:
    def __init__(self, run_dir: str | Path):
        import torch

        from hf_medai.pipelines import MoleculeDiffusionPipeline

        self.torch = torch
        self.run_dir = Path(run_dir)
        self.pipe = MoleculeDiffusionPipeline.from_pretrained(run_dir)
        self.pipe.set_progress_bar_config(disable=True)
        self.condition = self.pipe.config.condition_stats
        self.train_steps = self.pipe.scheduler.config.num_train_timesteps
        dist = self.pipe.config.atom_count_distribution
        self.max_atoms = min(MAX_ATOMS, max(dist["num_atoms"])) if dist else MAX_ATOMS

    def generate(self, num_molecules, num_atoms, steps, seed, target=None, formula=None):
        """-> ([(depiction, SMILES)], SMILES table rows, path of the SDF file). `formula` (e.g. C2H6O): every
        molecule gets exactly these atoms (composition-conditioned; the atom count follows from it)."""
        import gradio as gr

        from hf_medai.pipelines import FixedAtoms

        num_molecules = check_range("Number of molecules", num_molecules, 1, MAX_MOLECULES)
        # 0 = draw atom counts from the training distribution (when the pipeline stored one)
        low = 0 if self.pipe.config.atom_count_distribution else 1
        num_atoms = check_range("Atoms per molecule", num_atoms, low, MAX_ATOMS) or None
        steps = check_range("Denoising steps", steps, 1, min(MAX_STEPS, self.train_steps))
        seed = check_range("Seed", seed, 0, 2**31 - 1)
        condition = None
        if self.condition:
            if target is None or target == "":
                raise gr.Error(f"Give a target value of {self.condition['name']}.")
            condition = float(target)
            mean, std = self.condition["mean"], self.condition["std"]
            if abs(condition - mean) > 5 * std:
                raise gr.Error(
                    f"{self.condition['name']} target {condition} is far outside the training range "
                    f"(mean {mean:.3g}, std {std:.3g}); pick a value within 5 std of the mean."
                )
        fixed = None
        if formula and str(formula).strip():
            try:
                fixed = FixedAtoms.from_formula(str(formula))
            except ValueError as e:
                raise gr.Error(str(e)) from None
            unknown = sorted(set(fixed.atom_types) - set(self.pipe.config.elements or []))
            if unknown:
                raise gr.Error(f"{formula}: element(s) {unknown} are not in this model's {self.pipe.config.elements}")
            check_range("Atoms in the formula", len(fixed.atom_types), 1, MAX_ATOMS)
            num_atoms = None
        out = self.pipe(
            num_molecules=num_molecules,
            num_atoms=num_atoms,
            fixed_atoms=fixed,
            num_inference_steps=steps,
            generator=self.torch.Generator().manual_seed(seed),
            condition=condition,
            output_type="mols",
        )
        rows, depictions = [], []
        for k, mol in enumerate(out.molecules):
            smiles, image = depict(mol)
            rows.append([k + 1, len(out.atom_types[k]), smiles])
            if image is not None:
                depictions.append((image, f"#{k + 1} {smiles}"))
        sdf = output_folder("molecules") / "molecules.sdf"
        out.write_sdf(sdf)
        return depictions, rows, str(sdf)

    def build(self):
        import gradio as gr

        with gr.Blocks(title="hf-medai: molecule diffusion") as app:
            header(
                "Generated 3D molecules",
                f"Model: `{self.run_dir.name}`. Generated structures are untested hypotheses, not drugs.",
            )
            with gr.Row():
                with gr.Column(scale=1):
                    n = gr.Slider(
                        1, MAX_MOLECULES, value=4, step=1, label="Number of molecules", elem_id="num_molecules"
                    )
                    auto = self.pipe.config.atom_count_distribution is not None
                    atoms = gr.Slider(
                        0 if auto else 1,
                        self.max_atoms,
                        value=0 if auto else min(9, self.max_atoms),
                        step=1,
                        label="Atoms per molecule" + (" (0 = as in training data)" if auto else ""),
                        elem_id="num_atoms",
                    )
                    steps = gr.Slider(
                        1,
                        min(MAX_STEPS, self.train_steps),
                        value=min(MAX_STEPS, self.train_steps),
                        step=1,
                        label="Denoising steps",
                        elem_id="steps",
                    )
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="seed")
                    inputs = [n, atoms, steps, seed]
                    if self.condition:
                        inputs.append(
                            gr.Number(
                                value=round(self.condition["mean"], 3),
                                elem_id="target",
                                label=f"Target {self.condition['name']} (training mean "
                                f"{self.condition['mean']:.3g}, std {self.condition['std']:.3g})",
                            )
                        )
                    generate = self.generate
                    if not self.condition:
                        inputs.append(
                            gr.Textbox(
                                label="Formula (optional, e.g. C2H6O: exactly these atoms; overrides the atom count)",
                                elem_id="formula",
                            )
                        )

                        def generate(n_, atoms_, steps_, seed_, formula_):
                            return self.generate(n_, atoms_, steps_, seed_, formula=formula_)

                    button = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column(scale=2):
                    gallery = gr.Gallery(label="2D depictions", columns=3, height=240, elem_id="depictions")
                    table = gr.Dataframe(
                        headers=["#", "atoms", "SMILES"], label="SMILES", elem_id="smiles", interactive=False
                    )
                    sdf = gr.File(label="SDF (3D coordinates)", elem_id="sdf")
            button.click(generate, inputs=inputs, outputs=[gallery, table, sdf])
        return app


def depict(mol, size: int = 250):
    """(canonical SMILES, 2D depiction) of a generated molecule; ("invalid: why", None) when RDKit rejects it."""
    from rdkit import Chem
    from rdkit.Chem import Draw

    if mol is None:
        return "invalid: not built", None
    try:
        mol = Chem.Mol(mol)
        Chem.SanitizeMol(mol)
        flat = Chem.RemoveHs(mol)
        smiles = Chem.MolToSmiles(flat)
        flat.RemoveAllConformers()  # depict in 2D, not a projection of the 3D coordinates
        return smiles, Draw.MolToImage(flat, size=(size, size))
    except Exception as e:  # noqa: BLE001 - RDKit raises several kinds for unsanitisable structures
        return f"invalid: {str(e).splitlines()[0][:80]}", None
