"""The demo: a synthetic world with known ground truth, and a small model
trained on it with the shipped templates. It lets every part of Brew run and be
checked end to end without downloading anything."""
