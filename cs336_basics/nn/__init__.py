"""From-scratch neural-network building blocks: functional ops, layers, attention (and the causal conv for Mamba)."""
