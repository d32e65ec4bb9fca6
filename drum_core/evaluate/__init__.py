"""The paper's evaluation (section 5; docs/method.md §7): CLIP score and Text align per method variant (`drum eval`).

Every user's two most recent records are the targets (History.most_recent(2)); the rest is
the history. For a vector e and prompts r_i with intensities p_i (equation 3):

    sim(e, r_i, p_i) = 100 * cos(e, r_i) * p_i
    target  = sim(e, r_target, 1)
    history = sum_i sim(e, r_i, p_i) / sum_i p_i        (all p_i = 1: the plain mean)

CLIP score: e = the generated image's CLIP image embedding, r = CLIP text embeddings (the
evaluation CLIP, --clip-model). Text align: e = the condition's pooled vector, r = the same
model's plain pooled vectors of the prompts (the family's pooled encoders, e.g. CLIP-L for SD1,
bigG for SDXL; the paper reports it for OpenCLIP encoders). Scores are averaged over a user's
targets, then over users. Imp % = 100 * (history - history of the base model) / history of
the base model.

Variants (rows of the table, as in the paper's Tables 2/3):

    base         the model's own condition (no personalization)
    drum         coreset-sampled references (--ratio), guidance with --degree
    no_sampling  every history prompt a reference, guidance with --degree
    no_guidance  coreset references, guidance off: each PeCA block attends with ONE softmax
                 over the concatenated context [target | ref_1 | ... | ref_R] (ordinary
                 cross-attention; alpha and p_i play no part, the target's share is whatever
                 the scores give it, about 1 / (1 + R))
    other_user   control: DrUM with the profile of ANOTHER user's history (without its targets), a
                 fixed derangement: the next user in the data set's order, the last -> the first
    shuffled     control: DrUM with the user's history, every prompt's characters permuted
                 (drum_core.taste.shuffled_history, seed shuffle_seed): same sizes, no words

Results are appended per user to <out>/results.jsonl, so an interrupted run resumes (users
already there are skipped); the table goes to stdout, <out>/summary.csv, summary.json, table.md.
Under torchrun (results.run_evaluation) the users are dealt out across ranks, rank r appends to
<out>/results.rank<r>.jsonl, and every rank gathers all files; rank 0 writes the table.

    scores.py       equation 3 (target and history scores)
    variants.py     the table's rows; NoGuidance, the adapter with guidance off
    clip_scorer.py  the evaluation CLIP (image and text embeddings)
    evaluator.py    one user: targets and history, every variant's condition and image, their scores
    results.py      results.jsonl (resumable), the summary and the markdown table
    datasets.py     the users: PIP folders, MovieLens latest-small
    cli.py          the command line (`drum eval`, `python -m drum_core.evaluate`)
"""
