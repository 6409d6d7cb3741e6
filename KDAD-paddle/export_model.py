"""Export a trained KDAD class model to one static graph: python export_model.py --cls bottle (see --help)."""
from common.export import main

if __name__ == "__main__":
    main("kdad")
