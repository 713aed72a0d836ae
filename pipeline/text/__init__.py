"""Text algorithms as functions over strings and Arrow arrays: language ID, MinHash, quality
signals, tokenizer training and sequence packing. They know nothing of nodes or executors."""
