"""Fast paths of the inner loop: fused NumPy kernels of metabt's models (the dense one also
compiled with numba), the NumPy forward of CNP and ProtoNet, and batched adaptation over a
task axis. Each equals the torch reference in float64 (tested)."""

__all__: list[str] = []
