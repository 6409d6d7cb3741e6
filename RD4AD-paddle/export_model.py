"""Export a trained RD4AD class model to one static graph: python export_model.py --cls bottle (see --help)."""
import rd4ad
from common.cli.export_model import main

if __name__ == "__main__":
    main(rd4ad)
