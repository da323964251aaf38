"""polydiff.domains: one sub-package per modality (network, batch encoding, metrics, outputs)."""
