"""Generators of the bundled sample data, written in the real formats (offline defaults of the recipes)."""

from hf_medai.data.synthetic.lesion_pool import write_unlabelled_pool
from hf_medai.data.synthetic.lesions import write_ham10000

__all__ = ["write_ham10000", "write_unlabelled_pool"]
