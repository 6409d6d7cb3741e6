"""Export a trained RD4AD model to one static graph: python export_model.py --cls bottle --output_dir output"""
from common.errors import main_guard
from rd4ad.export import main

if __name__ == "__main__":
    main_guard(main)()
