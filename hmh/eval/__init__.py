"""Evaluation: the metric tensors, the BlurHand protocol, the constant baseline, reports and inference cost."""
