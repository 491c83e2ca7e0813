"""What a Stable Diffusion file is, without Django, Flower or torch.

File-level inspection used by the registry on every upload, and shared with the nodes:

- `sdcore.safetensors_header`: read and validate a safetensors header without the tensors.
- `sdcore.detect`: kind (checkpoint, LoRA, embedding, VAE, ControlNet) and architecture
  from tensor names and shapes; kohya `ss_*` and `modelspec.*` metadata.
- `sdcore.hashes`: SHA-256, AutoV1/V2/V3, CRC32 and BLAKE3 in one streaming pass.
- `sdcore.pickles`: scan pickle checkpoints for dangerous imports, never unpickling.
- `sdcore.sniff`: file format from magic bytes, and extension checks.
- `sdcore.archives`: safe inspection and extraction of dataset archives.
- `sdcore.paths`: the one check of a relative file path a stranger names (archive members,
  version files): no `..`, absolute path, drive letter or backslash.
- `sdcore.errors`: the error types, each with a stable `code`.

Loading models and the tiny-model builder live beside these (`sdcore.loading`,
`sdcore.tiny`, `sdcore.lora`) and are the only modules that import torch.
"""
