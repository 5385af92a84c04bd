"""The search dictionary loads while the catalog process starts, not in its first search."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_dictionary_is_loaded_when_the_module_is_imported_not_by_the_first_search():
    # In a fresh process: in this one another test may have searched already.
    probe = "import jieba; from services.catalog import search; print(jieba.dt.initialized)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "True"
