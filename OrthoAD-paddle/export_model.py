"""Export a fitted OrthoAD / PaDiM class model to one static graph: python export_model.py --cls bottle."""
import orthoad
from common.cli.export_model import main

if __name__ == "__main__":
    main(orthoad)
