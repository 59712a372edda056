"""Where collections live by default."""

from __future__ import annotations

import os
from pathlib import Path

ENV_COLLECTION = "RETRIEVAL_COLLECTION"
ENV_HOME = "RETRIEVAL_HOME"


def home() -> Path:
    """``$RETRIEVAL_HOME``, else the platform's user data folder for this tool."""
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("retrieval", appauthor=False))


def default_collection_path() -> Path:
    """``$RETRIEVAL_COLLECTION``, else the ``default`` collection under :func:`home`."""
    if os.environ.get(ENV_COLLECTION):
        return Path(os.environ[ENV_COLLECTION]).expanduser()
    return home() / "collections" / "default"
