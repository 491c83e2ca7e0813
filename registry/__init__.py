"""What exists: models, versions, files, datasets; storage, inspection, downloads."""
