"""flanet_jax: FLANet (Fully Attentional Network for Semantic Segmentation) in JAX/Flax."""
