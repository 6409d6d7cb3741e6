"""``python -m common.app --model_dir FOLDER ...``: the web demo (the command lives in :mod:`common.deploy.app`)."""
from common.deploy.app import main

if __name__ == "__main__":
    main()
