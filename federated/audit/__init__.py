"""Empirical privacy audit of federated LoRA training (issue #17).

Canaries (distinctive captioned images) go into one owner's private dataset, each with
probability 1/2 (:mod:`federated.audit.canaries`); after training, a membership-inference score
compares each canary's denoising loss under the trained adapter with the base model's
(:mod:`federated.audit.attack`); the statistics (:mod:`federated.audit.stats`) turn the scores
into an attack AUC and lower bounds on the epsilon the training actually achieved, to set
beside the accountant's epsilon. ``bench/privacy_audit.py`` runs it; bench/RESULTS-privacy.md
holds the numbers.
"""
