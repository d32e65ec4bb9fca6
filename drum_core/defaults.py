"""The paper's defaults (DrUM, arXiv 2508.03481, and its release), defined once: the core's keyword defaults,
the `drum` command's flags and the ComfyUI nodes' widgets all read them from here."""

DEGREE = 0.3  # personalization degree alpha (guidance, docs/method.md §2)
RATIO = 0.1  # coreset share of the history (Algorithm 1: n = max(1, round(ratio · N)))
K = 10  # size of the coreset's random anchor set A
SEED = 42  # seed of the anchor set A
MOVIELENS_DEGREE = 0.1  # the degree the paper's MovieLens evaluation uses
