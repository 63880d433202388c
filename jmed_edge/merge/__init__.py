"""Merge a LoRA adapter into its base and prove the merge (``jmed-edge merge``)."""

from jmed_edge.merge.merge import merge_adapter

__all__ = ["merge_adapter"]
