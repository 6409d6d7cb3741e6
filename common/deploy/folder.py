"""An exported folder describes itself: ``infer_config.json`` (preprocessing, thresholds, the method's configuration,
how to run the graph) and the sha256 of every file, which :func:`verify_files` checks before a runtime loads it (a
graph and its parameters are programs and data the runtime executes)."""
import hashlib
import json
import os

from common.core.errors import UserError
from common.core.files import atomic_write_json

# Written next to the exported model: what infer.py needs besides the graph (preprocessing, thresholds, method).
INFER_CONFIG = "infer_config.json"


def save_infer_config(model_dir, config):
    """Write ``MODEL_DIR/infer_config.json`` atomically (preprocessing, thresholds, method facts)."""
    atomic_write_json(os.path.join(model_dir, INFER_CONFIG), config)


def load_infer_config(model_dir):
    """Read ``MODEL_DIR/infer_config.json``; ``UserError`` when the folder holds no export."""

    path = os.path.join(model_dir, INFER_CONFIG)
    if not os.path.isfile(path):
        raise UserError(f"{path} not found: export the model with export_model.py first")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)



# -- integrity -----------------------------------------------------------------------------------------------------
def sha256(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(folder, names):
    """``{name: sha256}`` of the files ``names`` of ``folder`` that exist."""
    return {name: sha256(os.path.join(folder, name)) for name in names if os.path.isfile(os.path.join(folder, name))}


def verify_files(folder, recorded, names):
    """Check the files ``names`` against the digests recorded at export; a changed file is a ``UserError``."""
    if not recorded:
        print(f"note: {folder} records no file digests (exported by an older version); not verified")
        return
    for name in names:
        if name not in recorded:
            raise UserError(f"{os.path.join(folder, name)} was not part of the export (no recorded digest); "
                            "export again")
        if sha256(os.path.join(folder, name)) != recorded[name]:
            raise UserError(f"{os.path.join(folder, name)} changed since it was exported (sha256 differs): "
                            "refusing to load it; export again from a trusted checkpoint")
