"""hf-medai: medical AI recipes on the Hugging Face stack, evaluated honestly."""

__version__ = "0.1.0"
