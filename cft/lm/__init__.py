"""Language-model plumbing: loading, the world tokenizer, generation."""
