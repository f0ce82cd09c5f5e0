"""Diffusers pipelines added by hf-medai."""

from hf_medai.pipelines.fixed_atoms import FixedAtoms
from hf_medai.pipelines.lesion_diffusion import LesionDiffusionPipeline
from hf_medai.pipelines.molecule_diffusion import MoleculeDiffusionOutput, MoleculeDiffusionPipeline

__all__ = ["FixedAtoms", "LesionDiffusionPipeline", "MoleculeDiffusionOutput", "MoleculeDiffusionPipeline"]
