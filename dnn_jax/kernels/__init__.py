"""Optional native kernels: oneDNN convolutions via jax.ffi; see kernels/build.py."""
