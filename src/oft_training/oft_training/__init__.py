"""Demos to training sets, LoRA + FiLM + L1 fine-tuning and evaluation."""
