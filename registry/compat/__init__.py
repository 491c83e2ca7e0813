"""Routes shaped like the Hugging Face Hub and Civitai APIs, so existing tools work."""
