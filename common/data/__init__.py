"""What the project reads and how it feeds the networks: the one item shape of every dataset (``samples.Sample``),
one reader per dataset format (``readers``, chosen with ``--dataset``), image and mask files (``images``), the
dataset of preprocessed items every method trains and evaluates on (``dataset``), each method's preprocessing
(``transforms``), the batch loader that never hangs on a bad file (``loader``), seeded splits (``splits``),
synthetic data in the published layouts (``synthetic``) and the dataset checker (``check``)."""
