"""The node engine: pure Python (no Django, no Flower) LoRA training on private datasets.

Modules (import what you need; nothing heavy is imported here):

- ``constants``: ML-side settings read once from the environment.
- ``errors``: typed errors with a stable ``code`` (``DatasetError``, ``BudgetExceededError``...).
- ``dataset``: read a kohya or imagefolder dataset, ``DatasetIssue`` reports, the manifest.
- ``report``: the owner's dataset report (trigger word, near-duplicates, sizes, captions, tags).
- ``synthetic``: ``generate_synthetic_dataset`` with a learnable concept.
- ``cache``: VAE latents and text embeddings, encoded once per (dataset, model, resolution).
- ``adapter``: peft LoRA on the UNet, FFA-LoRA init from a shared seed, arrays for transport.
- ``dp``: opacus DP-SGD wiring, accountant state as bytes, noise from a target epsilon.
- ``ledger``: the node's per-dataset privacy budget and spends (SQLite).
- ``trainer``: ``train_round(config, ...) -> RoundResult``, one call per federated round.
- ``evaluate``: validation loss at fixed timesteps and noise, sample grids.
- ``export``: LoRA files (diffusers/PEFT and kohya) with ``ss_*`` / ``modelspec.*`` metadata.
"""
