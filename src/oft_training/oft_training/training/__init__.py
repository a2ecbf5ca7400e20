"""The fine-tuning loop: data order and augmentation, checkpoints with full trainer state, DDP."""
