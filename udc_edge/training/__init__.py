"""Training loops: restorers, purifier, distillation, fine-tuning."""
