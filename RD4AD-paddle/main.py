"""Train, evaluate or predict with RD4AD: python main.py --mode train|eval|predict --cls CLASS --data_dir DIR"""
from common.errors import main_guard
from rd4ad.cli import main

if __name__ == "__main__":
    main_guard(main)()
