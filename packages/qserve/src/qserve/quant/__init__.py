"""QoQ quantization (Lin et al., arXiv 2405.04532, Sec. 4): number formats, KV quantizer, W4A8 layers, transforms."""
