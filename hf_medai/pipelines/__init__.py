"""Diffusers pipelines added by hf-medai."""

from hf_medai.pipelines.molecule_diffusion import MoleculeDiffusionOutput, MoleculeDiffusionPipeline

__all__ = ["MoleculeDiffusionOutput", "MoleculeDiffusionPipeline"]
