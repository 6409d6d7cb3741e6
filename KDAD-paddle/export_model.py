"""Export a trained KDAD class model to one static graph: python export_model.py --cls bottle (see --help)."""
import kdad
from common.cli.export_model import main

if __name__ == "__main__":
    main(kdad)
