"""`ltbench report`: paper-style tables and figures from a results directory.

Reads only the CSVs the store writes, never the trainer, so it imports without torch.
"""
