"""Export a trained EfficientAD class model to one static graph: python export_model.py --cls bottle (see --help)."""
import efficientad
from common.cli.export_model import main

if __name__ == "__main__":
    main(efficientad)
