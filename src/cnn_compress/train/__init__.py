"""The training loop shared by train, finetune, QAT and straight-through fine-tuning."""
