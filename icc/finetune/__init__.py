"""Fine-tuning causal LMs to cluster: next-token prediction on synthetic clustering episodes, LoRA
adapters trained on Ray Train workers with DeepSpeed, before/after evaluation."""
