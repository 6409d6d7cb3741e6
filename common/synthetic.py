"""``python -m common.synthetic --out DIR ...``: seeded synthetic data for tests, the quick start and TIPC (the
command lives in :mod:`common.data.synthetic`)."""
from common.data.synthetic import main

if __name__ == "__main__":
    main()
