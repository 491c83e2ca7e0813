"""Studio: generate images on the site with a checkpoint, LoRAs and embeddings."""
