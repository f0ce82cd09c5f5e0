"""Tests never touch the network: Hugging Face libraries offline, Gradio analytics off (set before any import).

Also puts tests/ on sys.path so test files can `from helpers import ...`.
"""

import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_EVALUATE_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

sys.path.insert(0, str(Path(__file__).resolve().parent))
