"""Sphinx configuration for the smtp_proto / smtp_anyio / smtp_sync docs.

The build must work offline and with what ships with Sphinx: no intersphinx
(it downloads inventories), no graphviz (no ``dot`` binary on CI).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import smtp_proto  # noqa: E402

project = "smtp_proto"
author = "The smtp_proto developers"
copyright = "The smtp_proto developers"
version = release = smtp_proto.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

root_doc = "index"
exclude_patterns = ["_build", "examples", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# autodoc: the docstrings are reStructuredText; keep the source order so
# that related options stay together.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
add_module_names = False
python_use_unqualified_type_names = True

html_theme = "furo"
html_title = f"smtp_proto {release}"
html_static_path = ["_static"]
pygments_style = "sphinx"
