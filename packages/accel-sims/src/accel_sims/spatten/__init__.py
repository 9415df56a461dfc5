"""SpAtten (Wang, Zhang, Han; HPCA 2021, arXiv:2012.09852): cascade token and head pruning, local value
pruning and progressive quantization, and a cycle-level simulator of its datapath."""
