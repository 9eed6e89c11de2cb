"""Decoder models built from the kernels of kernels/ (LLaMA family and the seed systems'
variants), each layer calling kernels through one switch. Empty until the first model
lands (issue: Mirage's decoder layers)."""
