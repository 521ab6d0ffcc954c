"""dnn_jax: the classic Keras deep-network tutorial, reproduced and surpassed in JAX/Flax."""

__version__ = '0.1.0'
