"""DOTA / Lightening-Transformer (Zhu, Gu, Wang, ..., Han, Chen, Pan; arXiv:2305.19533, HPCA 2024): a photonic
tensor core made of a crossbar of dynamically-operated dot-product engines (DDOT), modelled at the device level
(`device`), the architecture level (`arch`: latency, energy, area), on transformer workloads (`workloads`), against an
electronic and a microring-bank baseline (`baselines`), on a real model (`accuracy`) and in reports (`report`).
"""
