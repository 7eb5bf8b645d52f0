"""Analyses of a teacher's and students' logits: the paper's experiments as tools."""
